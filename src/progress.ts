// How `run --wait` and `demo` show a run going: on a terminal one line rewritten in place (done/total,
// %, rows/s, ETA, failures); otherwise one JSON object per change, for logs and other programs. Both on
// stderr: stdout is kept for the command's result.
import type { RunStatus } from './status.ts';

export interface ProgressReporter {
  update(s: RunStatus): void;
  end(): void;
}

export function progressLine(s: RunStatus): string {
  const total = s.total ?? s.queued + s.rejected;
  const pct = total ? Math.floor((100 * s.done) / total) : 0;
  const eta = s.etaSeconds === null ? '?' : `${Math.round(s.etaSeconds)}s`;
  const paused = s.pauseReason ? ` · PAUSED: ${s.pauseReason}` : '';
  return `${s.runId}: ${s.done}/${s.total ?? `${total}+`} (${pct}%) · ${s.rowsPerSecond} rows/s · ETA ${eta} · ${s.failed} failed${s.rejected ? ` · ${s.rejected} rejected` : ''}${s.canceled ? ` · ${s.canceled} canceled` : ''} · ${s.state}${paused}`;
}

export function progressReporter(out: NodeJS.WriteStream = process.stderr): ProgressReporter {
  let drawn = false;
  if (out.isTTY) {
    return {
      update(s) {
        const line = progressLine(s);
        const width = out.columns ? out.columns - 1 : line.length;
        out.write(`\r\x1b[2K${line.slice(0, width)}`);
        drawn = true;
      },
      /** Ends the line (before other output, and at the end); the next update starts a new one. */
      end() {
        if (drawn) out.write('\n');
        drawn = false;
      },
    };
  }
  return {
    update(s) {
      const total = s.total ?? null;
      out.write(
        `${JSON.stringify({ runId: s.runId, state: s.state, done: s.done, total, percent: total ? Math.floor((100 * s.done) / total) : null, rowsPerSecond: s.rowsPerSecond, etaSeconds: s.etaSeconds, completed: s.completed, failed: s.failed, rejected: s.rejected, canceled: s.canceled, pauseReason: s.pauseReason })}\n`,
      );
    },
    end() {},
  };
}
