// The dashboard's pages: the runs (progress, counts, cost, pace) with queue health, a run (its
// failures by reason, a gallery of face → portrait filtered by status), and the login form.
import { waitingLine, type RunStatus } from '../../status.ts';
import { html, page, type Markup } from './html.ts';
import type { FailureGroup, RowsPage, RowView } from './rows.ts';

export interface QueueHealth {
  name: string;
  counts: Record<string, number>;
  paused: boolean;
  workers: number | null;
}

/** A row of the gallery with the URLs its pictures load from. */
export interface GalleryRow extends RowView {
  face?: string;
  portraits: string[];
}

export const STATUS_FILTERS = ['completed', 'failed', 'rejected', 'canceled', 'pending', 'submitting', 'submitted', 'storing'] as const;

const money = (v: number, c: string) => `${v.toFixed(2)} ${c}`;
export function duration(s: number | null): string {
  if (s === null) return '–';
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.round(s)}s`;
}
const when = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '–');

/** What the live updates send, and what the pages first render: the same fields. */
export function liveFields(s: RunStatus) {
  const total = s.total ?? s.queued + s.rejected;
  const pct = (n: number) => (total ? (100 * n) / total : 0);
  return {
    runId: s.runId,
    state: s.state,
    done: s.done,
    total,
    percent: total ? Math.floor((100 * s.done) / total) : 0,
    completed: s.completed,
    failed: s.failed,
    rejected: s.rejected,
    canceled: s.canceled,
    inFlight: s.inFlight,
    rowsPerSecond: s.rowsPerSecond.toFixed(1),
    eta: s.finishedAt ? 'done' : duration(s.etaSeconds),
    elapsed: duration(s.elapsedSeconds),
    cost: money(s.cost, s.currency),
    estimatedCost: money(s.estimatedCost, s.currency),
    bars: { completed: pct(s.completed), failed: pct(s.failed + s.rejected), canceled: pct(s.canceled) },
  };
}

function progressBar(s: RunStatus): Markup {
  const f = liveFields(s);
  const w = (p: number) => `width:${p.toFixed(2)}%`;
  return html`<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="${f.total}" aria-valuenow="${f.done}" data-run="${s.runId}">
<span class="seg ok" data-bar="completed" style="${w(f.bars.completed)}"></span><span class="seg bad" data-bar="failed" style="${w(f.bars.failed)}"></span><span class="seg off" data-bar="canceled" style="${w(f.bars.canceled)}"></span></div>`;
}

const field = (run: string, name: string, value: unknown) => html`<span data-run="${run}" data-field="${name}">${value}</span>`;

export function runsPage(runs: RunStatus[], queues: QueueHealth[], csrf: string): string {
  const rows = runs.map((s) => {
    const f = liveFields(s);
    return html`<tr>
<td><a href="/ui/runs/${encodeURIComponent(s.runId)}">${s.runId}</a><div class="sub">${s.manifest}</div></td>
<td>${html`<span data-run="${s.runId}" data-field="state" class="badge ${s.state}">${s.state}</span>`}</td>
<td class="grow">${progressBar(s)}<div class="sub">${field(s.runId, 'done', f.done)} / ${field(s.runId, 'total', f.total)} rows · ${field(s.runId, 'percent', f.percent)}%</div></td>
<td class="num">${field(s.runId, 'completed', f.completed)}</td><td class="num">${field(s.runId, 'failed', f.failed)}</td><td class="num">${field(s.runId, 'rejected', f.rejected)}</td><td class="num">${field(s.runId, 'canceled', f.canceled)}</td>
<td class="num">${field(s.runId, 'rowsPerSecond', f.rowsPerSecond)}</td><td class="num">${field(s.runId, 'eta', f.eta)}</td>
<td class="num">${field(s.runId, 'cost', f.cost)}<div class="sub">est. ${f.estimatedCost}</div></td>
<td class="sub">${when(s.startedAt)}</td></tr>`;
  });
  // Every run waits for the same dependency: said once above the list.
  const waiting = runs.find((r) => r.waitingFor.length)?.waitingFor ?? [];
  const body = html`<h1>Runs</h1>
${waiting.map((w) => html`<p class="alert">${waitingLine(w)}</p>`)}
${
  runs.length
    ? html`<table class="runs" data-live="/ui/runs.json"><thead><tr><th>Run</th><th>State</th><th>Progress</th><th class="num">Completed</th><th class="num">Failed</th><th class="num">Rejected</th><th class="num">Canceled</th><th class="num">Rows/s</th><th class="num">ETA</th><th class="num">Cost</th><th>Started</th></tr></thead><tbody>${rows}</tbody></table>`
    : html`<p class="empty">No runs yet. Start one with <code>portrait-batch run manifest.csv</code>.</p>`
}
<h2 id="queues">Queues</h2>${queueTable(queues)}`;
  return page('Runs', body, { nav: true, csrf });
}

function queueTable(queues: QueueHealth[]): Markup {
  const states = ['waiting', 'active', 'delayed', 'prioritized', 'failed', 'completed'];
  return html`<table class="queues"><thead><tr><th>Queue</th>${states.map((s) => html`<th class="num">${s}</th>`)}<th class="num">workers</th><th>state</th></tr></thead><tbody>${queues.map(
    (q) =>
      html`<tr><td><code>${q.name}</code></td>${states.map((s) => html`<td class="num${s === 'failed' && (q.counts[s] ?? 0) > 0 ? ' warn' : ''}">${q.counts[s] ?? 0}</td>`)}<td class="num">${q.workers ?? '?'}</td><td>${q.paused ? html`<span class="badge stopped">paused</span>` : html`<span class="badge finished">running</span>`}</td></tr>`,
  )}</tbody></table>${queues.length === 0 ? html`<p class="empty">Redis did not answer: queue counts unavailable.</p>` : ''}`;
}

export interface RunPageData {
  status: RunStatus;
  rows: RowsPage;
  gallery: GalleryRow[];
  filter?: string;
  page: number;
  pageSize: number;
  csrf: string;
  notice?: string;
}

export function runPage(d: RunPageData): string {
  const s = d.status;
  const f = liveFields(s);
  const id = s.runId;
  const base = `/ui/runs/${encodeURIComponent(id)}`;
  const link = (q: { status?: string; page?: number }) => {
    const p = new URLSearchParams();
    if (q.status) p.set('status', q.status);
    if (q.page && q.page > 1) p.set('page', String(q.page));
    const qs = p.toString();
    return `${base}${qs ? `?${qs}` : ''}#gallery`;
  };
  const pages = Math.max(1, Math.ceil(d.rows.matched / d.pageSize));
  const running = !s.finishedAt && s.state !== 'canceled';
  const actions = html`<div class="actions">
${running ? html`<form method="post" action="${base}/cancel" data-confirm="Cancel run ${id}? Nothing more is submitted."><input type="hidden" name="csrf" value="${d.csrf}"><button class="danger">Cancel run</button></form>` : ''}
${s.finishedAt && s.failed > 0 ? html`<form method="post" action="${base}/retry"><input type="hidden" name="csrf" value="${d.csrf}"><button>Retry ${s.failed} failed ${s.failed === 1 ? 'row' : 'rows'}</button></form>` : ''}
${s.finishedAt ? html`<a class="button ghost" href="${base}/report.csv">report.csv</a>` : ''}</div>`;
  const stats = html`<dl class="stats">
<div><dt>Rows</dt><dd>${field(id, 'done', f.done)} / ${field(id, 'total', f.total)}</dd></div>
<div><dt>Completed</dt><dd class="ok">${field(id, 'completed', f.completed)}</dd></div>
<div><dt>Failed</dt><dd class="bad">${field(id, 'failed', f.failed)}</dd></div>
<div><dt>Rejected</dt><dd>${field(id, 'rejected', f.rejected)}</dd></div>
<div><dt>Canceled</dt><dd>${field(id, 'canceled', f.canceled)}</dd></div>
<div><dt>In flight</dt><dd>${field(id, 'inFlight', f.inFlight)}</dd></div>
<div><dt>Rows/s</dt><dd>${field(id, 'rowsPerSecond', f.rowsPerSecond)}</dd></div>
<div><dt>ETA</dt><dd>${field(id, 'eta', f.eta)}</dd></div>
<div><dt>Elapsed</dt><dd>${field(id, 'elapsed', f.elapsed)}</dd></div>
<div><dt>Cost</dt><dd>${field(id, 'cost', f.cost)}<small>estimated ${f.estimatedCost}</small></dd></div></dl>`;
  const reasons = [
    s.pauseReason ? html`<p class="alert">Paused: ${s.pauseReason}</p>` : '',
    ...s.waitingFor.map((w) => html`<p class="alert">${waitingLine(w)}</p>`),
    s.stopReason ? html`<p class="alert">${s.state === 'canceled' ? 'Canceled' : 'Stopped'}: ${s.stopReason}</p>` : '',
    s.retryOf ? html`<p>Retries the failed rows of <a href="/ui/runs/${encodeURIComponent(s.retryOf)}">${s.retryOf}</a>.</p>` : '',
    s.retriedBy.length ? html`<p>Failed rows retried by ${s.retriedBy.map((r, i) => html`${i ? ', ' : ''}<a href="/ui/runs/${encodeURIComponent(r)}">${r}</a>`)}.</p>` : '',
    d.notice ? html`<p class="notice">${d.notice}</p>` : '',
  ];
  const tabs = html`<nav class="tabs"><a href="${link({})}" class="${d.filter ? '' : 'on'}">all <small>${d.rows.scanned}</small></a>${STATUS_FILTERS.filter((st) => d.rows.byStatus[st]).map(
    (st) => html`<a href="${link({ status: st })}" class="${d.filter === st ? 'on' : ''}">${st} <small>${d.rows.byStatus[st]}</small></a>`,
  )}</nav>`;
  const pager = html`<div class="pager">${d.page > 1 ? html`<a href="${link({ status: d.filter, page: d.page - 1 })}">← previous</a>` : html`<span></span>`}<span>page ${d.page} of ${pages} · ${d.rows.matched} rows</span>${d.page < pages ? html`<a href="${link({ status: d.filter, page: d.page + 1 })}">next →</a>` : html`<span></span>`}</div>`;
  const body = html`<div class="runhead" data-live="${base}/status.json" data-state="${s.state}"><h1>Run <code>${id}</code> ${html`<span data-run="${id}" data-field="state" class="badge ${s.state}">${s.state}</span>`}</h1>
<p class="sub">${s.manifest} · started ${when(s.startedAt)}${s.finishedAt ? html` · finished ${when(s.finishedAt)}` : ''} · ${s.submits} fal submissions</p>${actions}</div>
${reasons}
${progressBar(s)}
${stats}
<h2>Failures by reason</h2>${failureGroups(d.rows.groups, link)}
<h2 id="gallery">Rows</h2>${d.rows.complete ? '' : html`<p class="sub">The run is in progress: the first ${d.rows.scanned} rows are shown.</p>`}
${tabs}${pager}
<div class="gallery">${d.gallery.map(card)}</div>
${d.gallery.length === 0 ? html`<p class="empty">No rows${d.filter ? html` with status ${d.filter}` : ''}.</p>` : ''}
${pager}`;
  return page(`Run ${id}`, body, { nav: true, csrf: d.csrf });
}

function failureGroups(groups: FailureGroup[], link: (q: { status?: string }) => string): Markup {
  if (!groups.length) return html`<p class="empty">No failed or rejected rows.</p>`;
  return html`<div class="failures">${groups.map(
    (g) => html`<details class="group" open><summary><span class="count">${g.count}</span> <span class="badge ${g.status}">${g.status}</span> <span class="category">${g.category}</span> <span class="reason">${g.reason}</span></summary>
<ul>${g.rows.map((r) => html`<li>line ${r.line} · <code>${r.key}</code>${r.id && r.id !== r.key ? html` (${r.id})` : ''}</li>`)}${g.count > g.rows.length ? html`<li><a href="${link({ status: g.status })}">all ${g.count} ${g.status} rows…</a></li>` : ''}</ul></details>`,
  )}</div>`;
}

function card(r: GalleryRow): Markup {
  const face = r.face ? html`<img class="face" src="${r.face}" alt="face of ${r.key}" loading="lazy">` : html`<div class="face none">no preview</div>`;
  const right = r.portraits.length
    ? html`<div class="portraits">${r.portraits.slice(0, 4).map((src, i) => html`<a href="${src}" target="_blank" rel="noopener noreferrer"><img class="portrait" src="${src}" alt="portrait ${i + 1} of ${r.key}" loading="lazy"></a>`)}</div>`
    : html`<div class="why">${r.error || r.status}</div>`;
  return html`<figure class="card ${r.status}" data-row="${r.key}"><figcaption><span class="badge ${r.status}">${r.status}</span> line ${r.line} · <code>${r.key}</code></figcaption>
<div class="pair">${face}<span class="arrow">→</span>${right}</div>${r.portraits.length > 4 ? html`<div class="sub">+${r.portraits.length - 4} more</div>` : ''}</figure>`;
}

export function loginPage(message?: string): string {
  return page(
    'Sign in',
    html`<form class="login" method="post" action="/ui/login"><h1>Sign in</h1><p>Enter the dashboard token (<code>DASHBOARD_TOKEN</code>).</p>${message ? html`<p class="alert">${message}</p>` : ''}
<label>Token <input type="password" name="token" autocomplete="current-password" required autofocus></label><button>Sign in</button></form>`,
  );
}

export function messagePage(title: string, message: string, back?: string): string {
  return page(title, html`<h1>${title}</h1><p>${message}</p>${back ? html`<p><a href="${back}">← back</a></p>` : ''}`, { nav: false });
}
