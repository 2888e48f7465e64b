// Configuration from the environment: one table of variables (name, schema, default, meaning) that
// the config loader, the README's table and the docker-compose check all read.
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { isLoopbackUrl, privateHostReason } from './publicAddress.ts';

export const DEFAULT_ENDPOINT = 'fal-ai/flux-2-lora-gallery/face-to-full-portrait';
export const FAL_QUEUE_HOST = 'https://queue.fal.run';
export const FAL_JWKS = 'https://rest.alpha.fal.ai/.well-known/jwks.json';

const url = z.string().url();
const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number({ error: 'must be a whole number' }).int('must be a whole number').min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);
const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const hostList = z
  .string()
  .transform((v) => v.split(',').map((h) => h.trim().toLowerCase()).filter(Boolean))
  .refine((hs) => hs.every((h) => /^(\*\.)?[a-z0-9.-]+(:\d{1,5})?$/.test(h)), 'must be a comma-separated list of host[:port] (a leading *. matches subdomains)');

/** A length of time: a whole number with a unit (ms, s, m, h, d), e.g. `2h`, `90m`, `30s`, `500ms`; in milliseconds. */
export const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const duration = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => /^\d{1,9}(ms|s|m|h|d)$/.test(v), 'must be a duration: a whole number with a unit, e.g. 2h, 90m, 30s or 500ms')
  .transform((v) => {
    const [, n, unit] = /^(\d+)(ms|s|m|h|d)$/.exec(v)!;
    return Number(n) * DURATION_UNITS[unit!]!;
  })
  .refine((ms) => ms >= 1000, 'must be at least 1s');

const bucketList = z
  .string()
  .transform((v) => v.split(',').map((b) => b.trim()).filter(Boolean))
  .refine((bs) => bs.every((b) => /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(b)), 'must be a comma-separated list of S3 bucket names');

/** FACE_PREFIXES: `s3://bucket/` or `s3://bucket/some/prefix/` entries (a prefix ends with /, so it names a folder). */
const s3PrefixList = z
  .string()
  .transform((v) => v.split(',').map((p) => p.trim()).filter(Boolean))
  .refine(
    (ps) => ps.every((p) => /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\/([^/]+\/)*$/.test(p) && !p.split('/').slice(3).some((s) => s === '.' || s === '..')),
    'must be a comma-separated list of s3://bucket/ or s3://bucket/prefix/ entries (each ending with /)',
  );

/** Shortest DASHBOARD_TOKEN accepted: a guessable token makes every other dashboard rule moot. */
export const DASHBOARD_TOKEN_MIN = 32;

const adminHostList = z
  .string()
  .transform((v) => v.split(',').map((h) => h.trim().toLowerCase().replace(/^\[|\]$/g, '')).filter(Boolean))
  .refine((hs) => hs.every((h) => /^(\*\.)?[a-z0-9.-]+$/.test(h) || isIP(h) === 6), 'must be a comma-separated list of host names or addresses (no ports; a leading *. matches subdomains)');

/** Express's `trust proxy` setting from TRUST_PROXY: false, true, a hop count, or addresses/subnets. */
const trustProxy = z
  .string()
  .trim()
  .transform((v, ctx): boolean | number | string[] => {
    const lower = v.toLowerCase();
    if (['false', '0', 'no', ''].includes(lower)) return false;
    if (['true', 'yes'].includes(lower)) return true;
    if (/^\d{1,2}$/.test(lower)) return Number(lower);
    const list = lower.split(',').map((s) => s.trim()).filter(Boolean);
    const named = ['loopback', 'linklocal', 'uniquelocal'];
    const ok = list.every((s) => named.includes(s) || isIP(s.split('/')[0]!) !== 0);
    if (!ok) {
      ctx.addIssue({ code: 'custom', message: 'must be false, true, a hop count, or comma-separated addresses/subnets (loopback, linklocal, uniquelocal, 10.0.0.0/8)' });
      return z.NEVER;
    }
    return list;
  });

/** The long-running processes and the commands that steer runs (the logger name of each). */
export type Role = 'producer' | 'webhook' | 'worker' | 'scheduler';

interface VarSpec {
  schema: z.ZodType;
  default?: string;
  doc: string;
  /** Where the variable is read: every process, or only some roles. */
  roles: ReadonlyArray<Role>;
  /** Roles that cannot start without it (no default), each with the reason given when it is missing. */
  requiredBy?: Partial<Record<Role, string>>;
}

const ALL = ['producer', 'webhook', 'worker'] as const;

/** Every environment variable the service reads. */
export const CONFIG_VARS = {
  FAL_KEY: { schema: z.string().min(1), doc: 'fal API key (`Key` credentials). Required by workers that talk to fal.', roles: ['worker'], requiredBy: { worker: 'by the worker: it calls fal' } },
  FAL_ENDPOINT: { schema: z.string().regex(/^[\w.-]+\/[\w.-]+(\/[\w./-]+)?$/, 'must look like owner/alias[/path]'), default: DEFAULT_ENDPOINT, doc: 'Model endpoint id.', roles: ['producer', 'worker'] },
  FAL_QUEUE_URL: { schema: url, default: FAL_QUEUE_HOST, doc: "fal queue base URL; point it at the emulator (e.g. http://127.0.0.1:8090) to run offline.", roles: ['worker'] },
  FAL_JWKS_URL: { schema: url, default: FAL_JWKS, doc: "JWKS with fal's ED25519 webhook keys (cached 24 h, re-fetched on an unknown key).", roles: ['webhook'] },
  WEBHOOK_PUBLIC_URL: { schema: url, doc: 'Public base URL fal calls back (`/fal/webhook` is appended). Default http://127.0.0.1:$WEBHOOK_PORT (reachable only by an emulator on this machine).', roles: ['worker'] },
  RESULT_DELIVERY: {
    schema: z.enum(['auto', 'webhook', 'poll']),
    default: 'auto',
    doc: 'How results come back: `webhook`, `poll` (no webhook URL is sent; each request is polled on a schedule learned from the run), or `auto`: webhooks when fal can reach WEBHOOK_PUBLIC_URL (a public address, or fal itself on this machine or network, as the emulator is), else polling.',
    roles: ['worker'],
  },
  WEBHOOK_PORT: { schema: int(0, 65535), default: '8080', doc: 'Port the webhook receiver listens on.', roles: ['webhook', 'worker'] },
  WEBHOOK_SECRET: {
    schema: z.string().min(1),
    doc: 'Secret for the HMAC token in every webhook URL: only webhooks whose URL token verifies may name their row (others only by a request id we recorded). Required by webhook and worker, the same in both (e.g. `openssl rand -hex 32`); the embedded stack generates one into its data dir.',
    roles: ['webhook', 'worker'],
    requiredBy: { webhook: 'by the webhook receiver: it verifies the tokens in webhook URLs', worker: 'by the worker: it signs the webhook URLs given to fal' },
  },
  FAL_USER_ID: { schema: z.string().min(1), doc: "Optional: your fal user id; webhooks whose `x-fal-webhook-user-id` differs are refused.", roles: ['webhook'] },
  WEBHOOK_PROCESSES: {
    schema: z
      .string()
      .trim()
      .toLowerCase()
      .refine((v) => v === 'auto' || (/^\d{1,3}$/.test(v) && Number(v) >= 1 && Number(v) <= 256), 'must be auto or a whole number from 1 to 256')
      .transform((v) => (v === 'auto' ? availableParallelism() : Number(v))),
    default: '1',
    doc: 'Webhook receiver processes sharing WEBHOOK_PORT (node:cluster), `auto` = one per core: one process verifies signatures on one core. The primary keeps the admin listener (its /metrics sum every receiver) and stops them all on SIGTERM.',
    roles: ['webhook'],
  },
  WEBHOOK_MAX_BODY_BYTES: { schema: int(1024), default: String(32 * 1024 * 1024), doc: 'Largest webhook body accepted (413 above). sync_mode results carry images inline.', roles: ['webhook'] },
  REDIS_URL: { schema: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL'), default: 'redis://127.0.0.1:6379', doc: 'Redis for BullMQ queues and row state (use AOF persistence).', roles: ALL },
  S3_BUCKET: { schema: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name'), default: 'portrait-batch', doc: 'Bucket for images, metadata and reports.', roles: ALL },
  S3_PREFIX: { schema: z.string().regex(/^([\w.!*'()-]+\/)*$/, 'must be empty or end with / (e.g. portraits/)'), default: '', doc: 'Key prefix for everything the service writes.', roles: ALL },
  FACE_PREFIXES: {
    schema: s3PrefixList,
    default: '',
    doc: "Where s3:// faces may come from (comma-separated s3://bucket/prefix/ entries), besides an S3 manifest's own folder; frozen on each run when it starts. The service's own prefixes (runs/, processed/, failed/, the drop folder) are never faces.",
    roles: ['producer', 'worker', 'scheduler'],
  },
  FACE_BUCKETS: { schema: bucketList, default: '', doc: 'Whole buckets s3:// faces may come from (comma-separated): each is an s3://bucket/ entry of FACE_PREFIXES.', roles: ['producer', 'worker', 'scheduler'] },
  S3_ENDPOINT: { schema: url, doc: 'S3-compatible endpoint (MinIO, s3rver); unset for AWS.', roles: ALL },
  S3_PUBLIC_ENDPOINT: {
    schema: url,
    doc: 'Address of the same S3 server as fal can reach it; face URLs are presigned against it. Unset with a private or loopback S3_ENDPOINT: s3:// and local faces are uploaded to fal storage instead.',
    roles: ['worker'],
  },
  S3_REGION: { schema: z.string().min(1), default: 'us-east-1', doc: 'S3 region.', roles: ALL },
  S3_FORCE_PATH_STYLE: { schema: bool, default: 'false', doc: 'Path-style bucket addressing (needed by MinIO/s3rver).', roles: ALL },
  RESULT_HOSTS: { schema: hostList, default: 'fal.media,*.fal.media', doc: 'Hosts result images may be downloaded from (every redirect hop is checked; an entry without a port allows 80/443; a name must resolve to public addresses, a listed IP is allowed as is).', roles: ['worker'] },
  MAX_ROW_BYTES: { schema: int(0), default: String(16 * 1024), doc: 'Largest total of the passthrough (non-model) columns of one row, in bytes; they ride along in Redis while the row is in flight, so a larger row is rejected.', roles: ['producer'] },
  MAX_MANIFEST_BYTES: {
    schema: int(1),
    default: String(512 * 1024 * 1024),
    doc: 'Largest manifest, in bytes of CSV text (after gunzip), counted while it streams in; blank lines and comments count. A larger manifest is refused with this limit named (exit 2 from `run`, `failed/` with a `.reason.txt` from the drop folder) and nothing of it is submitted.',
    roles: ['producer', 'worker', 'scheduler'],
  },
  MAX_MANIFEST_ROWS: {
    schema: int(1),
    default: String(1_000_000),
    doc: 'Most data rows in one manifest (blank lines aside). A manifest with more is refused with this limit named, as with MAX_MANIFEST_BYTES, and nothing of it is submitted.',
    roles: ['producer', 'worker', 'scheduler'],
  },
  RUN_RETENTION: {
    schema: duration,
    default: '7d',
    doc: 'How long Redis keeps a finished run (its hash, done bitmap, counters, control jobs): every `pb:run:<id>:*` key expires this long after the run finished. `status` and `runs` then answer from the run\'s `summary.json` in S3; report, images and metadata stay in S3.',
    roles: ['worker'],
  },
  RUN_WINDOW: { schema: int(1), default: '1000', doc: 'Rows of one run in flight at once; the producer waits while the window is full.', roles: ['producer'] },
  SUBMIT_CONCURRENCY: { schema: int(1, 1000), default: '8', doc: 'Parallel fal submissions per worker process.', roles: ['worker'] },
  SUBMIT_RATE_PER_SECOND: { schema: int(1), default: '20', doc: 'Submissions per second across all workers (BullMQ rate limiter).', roles: ['worker'] },
  SUBMIT_RETRY_WINDOW: {
    schema: duration,
    default: '2h',
    doc: 'How long a submission is tried again while fal is unreachable or answers 429/5xx before its row fails (a duration: `2h`, `90m`, `30s`, `500ms`), counted from the first failure. While fal is unreachable, submissions pause and the rows wait; at most ROW_DEADLINE_MS (the default is cut to it).',
    roles: ['worker'],
  },
  STORE_CONCURRENCY: { schema: int(1, 1000), default: '8', doc: 'Parallel result downloads/uploads per worker process.', roles: ['worker'] },
  STORE_MAX_TRIES: { schema: int(1, 100), default: '6', doc: "Tries to download a result image from fal's result host before the row fails (a refused image fails at once). Failures of S3 or fal themselves are not counted here: see STORE_RETRY_WINDOW.", roles: ['webhook', 'worker'] },
  STORE_RETRY_WINDOW: {
    schema: duration,
    default: '2h',
    doc: "How long a result job keeps storing a finished result while S3 (or fal, for the result) is unreachable (a duration: `2h`, `90m`, `30s`), counted from when the result arrived; after it the reconciler re-drives the row until ROW_DEADLINE_MS after the result arrived, and only then the row fails (\"stored result could not be written to S3 by …\"). At most ROW_DEADLINE_MS (the default is cut to it).",
    roles: ['worker'],
  },
  STORE_RETRY_DELAY_MS: { schema: int(10), default: '1000', doc: 'Wait before a result is stored again; doubles each try, ±50% jitter.', roles: ['webhook', 'worker'] },
  MAX_ATTEMPTS: {
    schema: int(1, 20),
    default: '3',
    doc: 'fal requests per row at most: a lost request, and one fal failed without billing it (a server error such as `runner_server_error`), is resubmitted as a new attempt.',
    roles: ['worker'],
  },
  RESUBMIT_EXPIRED: {
    schema: bool,
    default: 'false',
    doc: "A request fal COMPLETED whose result it no longer keeps (404 on the result call) fails its row as `result expired`; `true` resubmits it as a new attempt instead (fal bills it again).",
    roles: ['worker'],
  },
  RECONCILE_INTERVAL_MS: { schema: int(100), default: '30000', doc: 'How often the reconciler sweeps rows in flight.', roles: ['worker'] },
  RECONCILE_GRACE_MS: { schema: int(0), default: '300000', doc: 'Wait this long for a webhook before polling fal for a request.', roles: ['worker'] },
  FAL_CONCURRENCY: {
    schema: int(1, 10000),
    default: '2',
    doc: "Requests kept on fal's side at once (submitted, not finished), across all workers; set it to the account's concurrency limit (fal starts accounts at 2). Other rows wait here, where canceling costs nothing.",
    roles: ['worker'],
  },
  ROW_DEADLINE_MS: { schema: int(1000), default: '7200000', doc: 'A request fal has started (seen IN_PROGRESS) and not finished this long after fails its row with a timeout (and is canceled).', roles: ['worker'] },
  QUEUE_DEADLINE_MS: {
    schema: int(2000),
    default: '21600000',
    doc: "A request not seen started by fal this long after it was submitted fails its row with a timeout; also sent to fal as the request's start timeout.",
    roles: ['worker'],
  },
  FAILURE_THRESHOLD_MIN_ROWS: { schema: int(1), default: '1000', doc: 'Rows finished before the failure threshold is checked.', roles: ['worker'] },
  FAILURE_THRESHOLD_RATIO: { schema: z.coerce.number().min(0).max(1), default: '0.5', doc: 'Failed/finished ratio above which a run stops submitting (1 disables).', roles: ['worker'] },
  MAX_IMAGE_BYTES: { schema: int(1), default: String(50 * 1024 * 1024), doc: 'Largest result image downloaded.', roles: ['worker'] },
  DOWNLOAD_TIMEOUT_MS: { schema: int(100), default: '60000', doc: 'Timeout for one result image download.', roles: ['worker'] },
  PREFLIGHT: {
    schema: z.enum(['on', 'off']),
    default: 'on',
    doc: "Look at every face before its row is submitted (reachable, PNG/JPEG/WEBP, width × height from its first bytes): a face that fails is rejected, never sent to fal; an unsized row is estimated at its face's size. `off` skips it.",
    roles: ['producer', 'worker'],
  },
  PREFLIGHT_CONCURRENCY: { schema: int(1, 1000), default: '16', doc: 'Faces preflight looks at at once, per producer (and in `run --dry-run --preflight`).', roles: ['producer', 'worker'] },
  MIN_FACE_PX: { schema: int(1), default: '64', doc: 'A face narrower or lower than this many pixels is rejected by preflight.', roles: ['producer', 'worker'] },
  MAX_FACE_MEGAPIXELS: {
    schema: z.coerce.number({ error: 'must be a number' }).positive('must be more than 0'),
    default: '50',
    doc: 'A face of more pixels than this (megapixels of 1024×1024) is rejected by preflight: the model would answer with an output as large, billed by the megapixel.',
    roles: ['producer', 'worker'],
  },
  MAX_FACE_BYTES: { schema: int(1), default: String(20 * 1024 * 1024), doc: "A face file larger than this is rejected by preflight (fal's own limit on a downloaded file is 20 MiB).", roles: ['producer', 'worker'] },
  PREFLIGHT_PRIVATE_HOSTS: {
    schema: hostList,
    default: '',
    doc: 'IP address:port entries preflight may read http(s) faces from although they are private (a face server your fal, e.g. an emulator, reaches on your network); anything else must be at a public address.',
    roles: ['producer', 'worker'],
  },
  PRESIGN_EXPIRES_SECONDS: { schema: int(60, 604800), default: '86400', doc: 'Lifetime of presigned URLs handed to fal for s3:// and local faces.', roles: ['worker'] },
  JOB_LOCK_MS: { schema: int(1000), default: '30000', doc: 'BullMQ job lock; a killed worker\'s jobs are retried after about this long.', roles: ['worker'] },
  PRICE_PER_MEGAPIXEL: { schema: z.coerce.number({ error: 'must be a number' }).min(0, 'must be at least 0'), default: '0.021', doc: "Price of one output megapixel, for estimates and the cost cap (fal's published price for the default endpoint).", roles: ['producer'] },
  CURRENCY: { schema: z.string().regex(/^[A-Z]{3}$/, 'must be a three-letter currency code such as USD'), default: 'USD', doc: 'Currency of PRICE_PER_MEGAPIXEL and of --max-cost.', roles: ['producer'] },
  SCHEDULES_FILE: { schema: z.string().min(1), doc: 'Optional: YAML or JSON file of cron schedules (`schedules: [{name, cron, timezone, manifest, options}]`) the scheduler keeps as BullMQ job schedulers; checked at start (exit 3).', roles: ['scheduler'] },
  DROP_PREFIX: { schema: z.string().regex(/^([\w.!*'()-]+\/)+$/, 'must be a key prefix ending with / (e.g. incoming/)'), default: 'incoming/', doc: 'Drop folder in S3_BUCKET the scheduler polls: each new .csv/.csv.gz becomes one run, then moves to processed/<runId>/ (or failed/ with a .reason.txt) beside it.', roles: ['scheduler'] },
  DROP_POLL_MS: { schema: int(10), default: '15000', doc: 'How often the scheduler lists the drop folder.', roles: ['scheduler'] },
  DROP_SETTLE_MS: { schema: int(0), default: '30000', doc: 'A dropped object younger than this (by its Last-Modified) waits: it may still be being written.', roles: ['scheduler'] },
  NOTIFY_URL: { schema: z.string().regex(/^https?:\/\/\S+$/, 'must be an http(s) URL'), doc: 'Optional: where each run\'s summary is POSTed when the run ends (HMAC-signed, retried with backoff; a failure never fails the run).', roles: ['worker'] },
  NOTIFY_SECRET: { schema: z.string().min(16, 'must be at least 16 characters'), doc: 'HMAC-SHA256 key of the completion notice signature (`X-Portrait-Batch-Signature: t=<unix seconds>,v1=<hex>`, v1 over `<t>.<raw body>`; receivers refuse a t older than 5 minutes); required with NOTIFY_URL.', roles: ['worker'] },
  LOG_LEVEL: { schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), default: 'info', doc: 'pino log level.', roles: ALL },
  LOG_FORMAT: { schema: z.enum(['json', 'pretty']), default: 'json', doc: 'json (one object a line, for log collectors) or pretty (coloured lines for a terminal).', roles: ALL },
  ADMIN_PORT: { schema: int(0, 65535), default: '9090', doc: 'Port of the admin listener every long-running process opens: /metrics, /healthz, /readyz and the dashboard under /ui (0: any free port, logged). Give each process on one host its own.', roles: ALL },
  ADMIN_HOST: { schema: z.string().regex(/^[\w.:-]+$/, 'must be an address such as 127.0.0.1 or 0.0.0.0'), default: '127.0.0.1', doc: 'Address the admin listener binds; loopback by default. 0.0.0.0 only inside a container or behind a firewall.', roles: ALL },
  ADMIN_ALLOWED_HOSTS: {
    schema: adminHostList,
    doc: 'Host names the admin listener answers (the request\'s Host header, port aside; `*.domain` matches subdomains); any other gets 421, so a DNS-rebinding page cannot read /metrics, /readyz or /ui. Default: localhost, 127.0.0.1, ::1 and ADMIN_HOST itself. Add the names Prometheus or a proxy use (e.g. `webhook`, `pb.internal.example`).',
    roles: ALL,
  },
  TRUST_PROXY: {
    schema: trustProxy,
    default: 'false',
    doc: "Which proxy in front of the admin listener to believe about the client (Express `trust proxy`): `false`, `true`, a hop count, or addresses/subnets (`loopback`, `10.0.0.0/8`). Decides the client address sign-in failures are counted by, and `Secure` cookies when the proxy says the request came over TLS (X-Forwarded-Proto: https).",
    roles: ALL,
  },
  DASHBOARD_TOKEN: {
    schema: z.string().min(DASHBOARD_TOKEN_MIN, `must be at least ${DASHBOARD_TOKEN_MIN} characters (e.g. \`openssl rand -hex 24\`)`),
    doc: `Turns the dashboard (/ui on the admin listener) on; every dashboard request needs it (bearer header or the login form's session). At least ${DASHBOARD_TOKEN_MIN} characters. Unset: no dashboard (metrics and health are still served). e.g. \`openssl rand -hex 24\`.`,
    roles: ALL,
  },
} satisfies Record<string, VarSpec>;

export type ConfigVar = keyof typeof CONFIG_VARS;

type Out<K extends ConfigVar> = z.output<(typeof CONFIG_VARS)[K]['schema']>;
export type Config = { [K in ConfigVar]: (typeof CONFIG_VARS)[K] extends { default: string } ? Out<K> : Out<K> | undefined } & {
  /** Derived: the URL fal posts results to. */
  webhookUrl: string;
  /** Derived from RESULT_DELIVERY: how results come back. */
  delivery: Delivery;
  /** Derived: faces held in S3 reach fal through fal storage (the bucket is not reachable from fal). */
  facesViaFalStorage: boolean;
};

export interface Delivery {
  mode: 'webhook' | 'poll';
  /** One sentence: why this mode (logged once when workers start). */
  why: string;
  /** A setting that cannot work with real fal, and how to fix it. */
  warning?: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Reads and validates every variable; throws one ConfigError listing each bad variable by name. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, spec] of Object.entries(CONFIG_VARS) as [ConfigVar, VarSpec][]) {
    const raw = env[name];
    const value = raw === undefined || raw === '' ? spec.default : raw;
    if (value === undefined) continue;
    const parsed = spec.schema.safeParse(value);
    if (parsed.success) out[name] = parsed.data;
    else problems.push(`${name}: ${parsed.error.issues.map((i) => i.message).join('; ')} (got ${JSON.stringify(raw)})`);
  }
  if (out.NOTIFY_URL !== undefined && out.NOTIFY_SECRET === undefined) problems.push('NOTIFY_SECRET: is required with NOTIFY_URL (completion notices are always signed)');
  // The retry windows lie within the row deadline: an explicit longer one is a mistake, the default is cut.
  for (const name of ['SUBMIT_RETRY_WINDOW', 'STORE_RETRY_WINDOW'] as const) {
    const deadline = out.ROW_DEADLINE_MS as number | undefined;
    if (typeof out[name] !== 'number' || deadline === undefined || (out[name] as number) <= deadline) continue;
    if (env[name]) problems.push(`${name}: must be at most ROW_DEADLINE_MS (${deadline} ms), got ${JSON.stringify(env[name])}`);
    else out[name] = deadline;
  }
  if (problems.length) throw new ConfigError(problems);
  const cfg = out as Omit<Config, 'webhookUrl' | 'delivery' | 'facesViaFalStorage'>;
  const base = (cfg.WEBHOOK_PUBLIC_URL ?? `http://127.0.0.1:${cfg.WEBHOOK_PORT}`).replace(/\/+$/, '');
  const facesViaFalStorage = !cfg.S3_PUBLIC_ENDPOINT && !!cfg.S3_ENDPOINT && privateHostReason(cfg.S3_ENDPOINT) !== undefined;
  return { ...cfg, webhookUrl: `${base}/fal/webhook`, delivery: resultDelivery(cfg), facesViaFalStorage } as Config;
}

/**
 * RESULT_DELIVERY resolved. fal (any address that is not loopback or private) cannot post to a private
 * WEBHOOK_PUBLIC_URL, nor to the default one on 127.0.0.1; an emulator on this machine (or a private
 * network) can, so the embedded stack and the tests keep webhooks under `auto`.
 */
export function resultDelivery(cfg: Pick<Config, 'RESULT_DELIVERY' | 'WEBHOOK_PUBLIC_URL' | 'FAL_QUEUE_URL' | 'WEBHOOK_PORT'>): Delivery {
  const falPrivate = privateHostReason(cfg.FAL_QUEUE_URL) !== undefined;
  const falLoopback = isLoopbackUrl(cfg.FAL_QUEUE_URL);
  const url = cfg.WEBHOOK_PUBLIC_URL;
  const urlPrivate = url ? privateHostReason(url) : undefined;
  // Why fal cannot post to the webhook URL, if it cannot.
  const unreachable = url
    ? urlPrivate && !falPrivate
      ? `WEBHOOK_PUBLIC_URL=${url} cannot be reached by fal at ${cfg.FAL_QUEUE_URL} (${urlPrivate})`
      : undefined
    : falLoopback
      ? undefined
      : `WEBHOOK_PUBLIC_URL is not set (the default, http://127.0.0.1:${cfg.WEBHOOK_PORT}, is reachable only from this machine)`;
  const fix = 'set WEBHOOK_PUBLIC_URL to a public https URL that reaches `portrait-batch webhook`';
  if (cfg.RESULT_DELIVERY === 'poll') return { mode: 'poll', why: 'results are polled (RESULT_DELIVERY=poll)' };
  if (cfg.RESULT_DELIVERY === 'webhook') {
    if (!unreachable) return { mode: 'webhook', why: 'results come by webhook (RESULT_DELIVERY=webhook)' };
    return {
      mode: 'webhook',
      why: 'results come by webhook (RESULT_DELIVERY=webhook)',
      warning: `${unreachable}: no webhook will arrive and every result waits RECONCILE_GRACE_MS for the reconciler; ${fix}, or use RESULT_DELIVERY=poll (or auto).`,
    };
  }
  if (!unreachable) return { mode: 'webhook', why: `results come by webhook to ${url ?? `http://127.0.0.1:${cfg.WEBHOOK_PORT}`} (RESULT_DELIVERY=auto)` };
  const why = `results are polled: ${unreachable} (RESULT_DELIVERY=auto)`;
  // An address the user chose that fal cannot reach is a mistake worth a warning; no address at all is a choice.
  return url ? { mode: 'poll', why, warning: `${unreachable}; polling instead. To receive webhooks, ${fix}; to silence this, RESULT_DELIVERY=poll.` } : { mode: 'poll', why };
}

/**
 * The one check of the variables a role cannot start without (`requiredBy` in the table): one
 * ConfigError (exit 3) naming each that is missing and why the role needs it. Each role calls it
 * once, before it connects to anything.
 */
export function requireRoleVars(cfg: Config, role: Role): void {
  const problems = (Object.entries(CONFIG_VARS) as [ConfigVar, VarSpec][])
    .filter(([name, spec]) => spec.requiredBy?.[role] !== undefined && (cfg[name] === undefined || cfg[name] === null))
    .map(([name, spec]) => `${name}: is required ${spec.requiredBy![role]!}`);
  if (problems.length) throw new ConfigError(problems);
}

/** A variable `role` requires, read after `requireRoleVars` checked it (a missing one is the same ConfigError). */
export function requiredVar<K extends ConfigVar>(cfg: Config, name: K, role: Role): NonNullable<Config[K]> {
  const v = cfg[name];
  if (v === undefined || v === null) {
    requireRoleVars(cfg, role);
    throw new ConfigError([`${name}: is required by the ${role}`]);
  }
  return v as NonNullable<Config[K]>;
}
