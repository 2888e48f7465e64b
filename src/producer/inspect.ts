// Reading a manifest once before anything is recorded: is it a usable CSV (ManifestError if not), what
// its bytes hash to (the run id), and what it would cost. `run --dry-run` is exactly this, with no
// Redis, S3 or fal.
import { createHash } from 'node:crypto';
import { Transform, pipeline } from 'node:stream';
import { loadConfig, type Config } from '../core/config.ts';
import { estimateRow, roundMoney } from '../core/cost.ts';
import { InputsDigest, isRejected, readManifest, type ReadManifestOptions } from '../manifest/index.ts';
import { manifestSource, type ManifestSource } from '../manifest/source.ts';

export interface ManifestInspection {
  sha256: string;
  /** What its rows point at: the content of its local faces (undefined when it names none, or they were checked elsewhere). */
  inputsSha256?: string;
  rows: number;
  valid: number;
  rejected: number;
  /** Images fal would return (num_images of every valid row). */
  images: number;
  megapixels: number;
  /** Valid rows without image_size, estimated at 1 MP an image. */
  unsizedRows: number;
}

/**
 * Reads the whole manifest once (streaming). The hash covers every byte; the counts cover `lines` only
 * when given (a retry's selection).
 */
export async function inspectManifest(source: ManifestSource, opts: { read?: ReadManifestOptions; lines?: ReadonlySet<number> } = {}): Promise<ManifestInspection> {
  const hash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  // pipeline, not .pipe: an error of the source reaches the reader through the tap.
  pipeline(await source.open(), tap, () => undefined);
  const res = { rows: 0, valid: 0, rejected: 0, images: 0, megapixels: 0, unsizedRows: 0 };
  const read = opts.read ?? { baseDir: source.baseDir };
  const inputs = read.checkedLocalFaces ? undefined : new InputsDigest();
  for await (const row of readManifest(tap, read)) {
    await inputs?.add(row);
    if (opts.lines && !opts.lines.has(row.line)) continue;
    res.rows++;
    if (isRejected(row)) res.rejected++;
    else {
      res.valid++;
      const e = estimateRow(row.input as Record<string, unknown>);
      res.images += e.images;
      res.megapixels += e.megapixels;
      if (!e.sized) res.unsizedRows++;
    }
  }
  return { sha256: hash.digest('hex'), inputsSha256: inputs?.digest(), ...res };
}

/**
 * A run id a person can read, that changes whenever the manifest's bytes, the files its rows point at
 * or the endpoint change: the same manifest in the same place resumes, the same CSV in a folder with
 * other faces is another run.
 */
export function deriveRunId(name: string, sha256: string, endpoint: string, inputsSha256?: string): string {
  const slug = name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '').slice(0, 48) || 'run';
  const h = createHash('sha256').update(`${sha256}\n${endpoint}${inputsSha256 ? `\n${inputsSha256}` : ''}`).digest('hex').slice(0, 12);
  return `${slug}-${h}`;
}

/** The `run --dry-run --json` line. */
export function dryRunReport(i: ManifestInspection, pricePerMegapixel: number, currency: string) {
  return {
    rows: i.rows,
    valid: i.valid,
    rejected: i.rejected,
    images: i.images,
    megapixels: i.megapixels,
    estimatedCost: roundMoney(i.megapixels * pricePerMegapixel),
    currency,
    unsizedRows: i.unsizedRows,
  };
}

export type DryRun = ReturnType<typeof dryRunReport>;

/**
 * Validates and estimates a manifest without Redis, S3 or fal (an S3 manifest needs S3 to be read).
 * Here rather than in index.ts so that `run --dry-run` loads none of the service (see cli.ts).
 */
export async function dryRun(source: string | ManifestSource, config: Config = loadConfig()): Promise<DryRun> {
  const src =
    typeof source === 'string'
      ? manifestSource(source, /^s3:\/\//i.test(source) ? new (await import('../core/s3.ts')).Storage(config) : undefined)
      : source;
  return dryRunReport(await inspectManifest(src), config.PRICE_PER_MEGAPIXEL, config.CURRENCY);
}
