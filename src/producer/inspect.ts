// Reading a manifest once before anything is recorded: is it a usable CSV (ManifestError if not), what
// its bytes hash to (the run id), and what it would cost. `run --dry-run` is exactly this, with no
// Redis, S3 or fal.
import { createHash } from 'node:crypto';
import { Transform, pipeline } from 'node:stream';
import { loadConfig, type Config } from '../core/config.ts';
import { estimateRow, roundMoney } from '../core/cost.ts';
import { buildPolicy } from '../core/policy.ts';
import type { Storage } from '../core/s3.ts';
import { InputsDigest, isRejected, readManifest, s3FacePolicy, type ReadManifestOptions, type ValidRow } from '../manifest/index.ts';
import { manifestSource, type ManifestSource } from '../manifest/source.ts';
import { faceSourceOf, lookAtFaces, preflightSettings, type PreflightSettings } from './preflight.ts';

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
  /** Valid rows without image_size whose face's size is not known (not preflighted), estimated at 1 MP an image. */
  unsizedRows: number;
  /** With preflight: faces looked at, and the rows (counted in `rejected`) whose face failed. */
  preflight?: { looked: number; refused: number };
}

/** How a dry run looks at faces: the limits, S3 for s3:// faces, and a count of faces looked at so far. */
export interface InspectPreflight {
  settings: PreflightSettings;
  s3: { bucket: string; endpoints: readonly string[] };
  storage?: () => Storage;
  onLooked?: (looked: number) => void;
}

/** Rows whose faces are looked at together (at most PREFLIGHT_CONCURRENCY at once). */
const PREFLIGHT_BATCH = 256;

/**
 * Reads the whole manifest once (streaming). The hash covers every byte; the counts cover `lines` only
 * when given (a retry's selection).
 */
export async function inspectManifest(
  source: ManifestSource,
  opts: { read?: ReadManifestOptions; lines?: ReadonlySet<number>; preflight?: InspectPreflight } = {},
): Promise<ManifestInspection> {
  const hash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  // pipeline, not .pipe: an error of the source reaches the reader through the tap.
  pipeline(await source.open(), tap, () => undefined);
  const res: Omit<ManifestInspection, 'sha256' | 'inputsSha256'> = { rows: 0, valid: 0, rejected: 0, images: 0, megapixels: 0, unsizedRows: 0 };
  const read = opts.read ?? { baseDir: source.baseDir };
  const inputs = read.checkedLocalFaces ? undefined : new InputsDigest();
  const count = (row: ValidRow, face?: { width: number; height: number }) => {
    res.valid++;
    const e = estimateRow(row.input as Record<string, unknown>, face);
    res.images += e.images;
    res.megapixels += e.megapixels;
    if (!e.sized) res.unsizedRows++;
  };
  const pf = opts.preflight;
  if (pf) res.preflight = { looked: 0, refused: 0 };
  let pending: ValidRow[] = [];
  const lookAtPending = async () => {
    if (!pf || !pending.length) return;
    const verdicts = await lookAtFaces(pending.map((row) => faceSourceOf(row, pf.s3)), pf.settings, pf.storage, () => {
      res.preflight!.looked++;
      pf.onLooked?.(res.preflight!.looked);
    });
    pending.forEach((row, i) => {
      const v = verdicts[i]!;
      if ('refused' in v) {
        res.rejected++;
        res.preflight!.refused++;
      } else count(row, v.face);
    });
    pending = [];
  };
  for await (const row of readManifest(tap, read)) {
    await inputs?.add(row);
    if (opts.lines && !opts.lines.has(row.line)) continue;
    res.rows++;
    if (isRejected(row)) res.rejected++;
    else if (pf) {
      pending.push(row);
      if (pending.length >= PREFLIGHT_BATCH) await lookAtPending();
    } else count(row);
  }
  await lookAtPending();
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
    ...(i.preflight ? { preflight: i.preflight } : {}),
  };
}

export type DryRun = ReturnType<typeof dryRunReport>;

/**
 * Validates and estimates a manifest without Redis, S3 or fal (an S3 manifest needs S3 to be read).
 * Here rather than in index.ts so that `run --dry-run` loads none of the service (see cli.ts).
 */
export async function dryRun(source: string | ManifestSource, config: Config = loadConfig(), opts: { preflight?: boolean; onLooked?: (looked: number) => void } = {}): Promise<DryRun> {
  let storage: Storage | undefined;
  const s3 = async () => (storage ??= new (await import('../core/s3.ts')).Storage(config));
  const src = typeof source === 'string' ? manifestSource(source, /^s3:\/\//i.test(source) ? await s3() : undefined) : source;
  // s3:// faces need S3; the client is made up front (it connects to nothing until used).
  const preflight: InspectPreflight | undefined = opts.preflight
    ? { settings: preflightSettings(config, buildPolicy(config).preflight), s3: s3FacePolicy(config), storage: ((client) => () => client)(await s3()), onLooked: opts.onLooked }
    : undefined;
  return dryRunReport(await inspectManifest(src, { preflight }), config.PRICE_PER_MEGAPIXEL, config.CURRENCY);
}
