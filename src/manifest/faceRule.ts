// The faces a run may read from S3. An s3:// face is presigned (or read by the dashboard) with the
// service's credentials, so a manifest may name only objects its run is entitled to: the deployment's
// FACE_PREFIXES (FACE_BUCKETS as whole-bucket entries), and for a manifest that itself lives in S3 (the
// drop folder, a schedule, `run s3://…`) that manifest's own folder and below. The service's own
// prefixes — every run's files under runs/, the drop folder's processed/ and failed/, and drop-folder
// uploads outside the manifest's own folder — are never faces, whatever FACE_PREFIXES says.
//
// The entitlement (FaceRule) is decided once, when the run starts, and stored with the run
// (`options.faces`): the producer, every worker, a retry and the dashboard judge a face by the same
// rule, whatever their own settings. It is a handful of prefixes: O(1) a run.
import { show } from './errors.ts';

/** What one run may read: stored with the run. Every entry is `s3://bucket/` or `s3://bucket/prefix/`. */
export interface FaceRule {
  /** FACE_PREFIXES and FACE_BUCKETS (as `s3://bucket/`) when the run started. */
  prefixes: string[];
  /** The folder of the manifest, when the manifest is itself in S3 (never the drop folder's top). */
  folder?: string;
  /** The drop folder when the run started (`s3://bucket/incoming/`): uploads there are someone's manifests. */
  drop?: string;
}

/** A deployment's settings the face rule is made from. */
export interface FaceRuleSettings {
  S3_BUCKET: string;
  S3_PREFIX: string;
  FACE_BUCKETS: readonly string[];
  FACE_PREFIXES?: readonly string[];
  DROP_PREFIX?: string;
  S3_ENDPOINT?: string;
  S3_PUBLIC_ENDPOINT?: string;
}

/** A run's rule with what the checking process knows of the deployment: the prefixes that are never faces. */
export interface S3FacePolicy extends FaceRule {
  /** Never faces, whatever the rule allows: runs/ under S3_PREFIX, processed/ and failed/ beside the drop folder. */
  never: readonly string[];
  /** Drop folders (the run's and this process's): only the manifest's own folder in them may be read. */
  drops: readonly string[];
  /** The service's bucket, and the S3 endpoints an http(s) URL could reach it through. */
  bucket: string;
  endpoints: readonly string[];
}

const S3_URL = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.+)$/;

/**
 * The rule of a run starting now: the deployment's prefixes, plus the folder of its manifest when that
 * is an s3:// URL. A manifest at the top of the drop folder gets no folder: it would be every team's.
 */
export function faceRuleFor(cfg: FaceRuleSettings, manifestUrl?: string): FaceRule {
  const prefixes = [...new Set([...(cfg.FACE_PREFIXES ?? []), ...cfg.FACE_BUCKETS.map((b) => `s3://${b}/`)])];
  const drop = cfg.DROP_PREFIX ? `s3://${cfg.S3_BUCKET}/${cfg.DROP_PREFIX}` : undefined;
  const rule: FaceRule = { prefixes };
  if (drop) rule.drop = drop;
  const m = manifestUrl ? S3_URL.exec(manifestUrl) : null;
  if (m) {
    const key = m[2]!;
    const folder = `s3://${m[1]}/${key.slice(0, key.lastIndexOf('/') + 1)}`;
    if (folder !== drop && !folder.split('/').slice(3).some((s) => s === '.' || s === '..')) rule.folder = folder;
  }
  return rule;
}

/** The policy a face is judged by: the run's stored rule (or, for a run started before rules were stored, the settings'). */
export function s3FacePolicy(cfg: FaceRuleSettings, rule?: FaceRule): S3FacePolicy {
  const r = rule ?? faceRuleFor(cfg);
  const ownDrop = cfg.DROP_PREFIX ? `s3://${cfg.S3_BUCKET}/${cfg.DROP_PREFIX}` : undefined;
  const drops = [...new Set([r.drop, ownDrop].filter((d): d is string => Boolean(d)))];
  // processed/ and failed/ sit beside the drop folder (triggers/dropFolder.ts dropLayout).
  const beside = drops.flatMap((d) => {
    const parent = d.replace(/[^/]+\/$/, '');
    return [`${parent}processed/`, `${parent}failed/`];
  });
  return {
    prefixes: r.prefixes,
    ...(r.folder ? { folder: r.folder } : {}),
    never: [...new Set([`s3://${cfg.S3_BUCKET}/${cfg.S3_PREFIX}runs/`, ...beside])],
    drops,
    bucket: cfg.S3_BUCKET,
    endpoints: [cfg.S3_ENDPOINT, cfg.S3_PUBLIC_ENDPOINT].filter((e): e is string => Boolean(e)),
  };
}

/** Why an s3:// face may not be read under the policy, or undefined when it may. */
export function s3FaceRefusal(url: string, policy: S3FacePolicy): string | undefined {
  const why = whyNot(url, policy);
  return why && `${show(url)} ${why}`;
}

/** The rule's verdict on an s3:// URL, as a predicate of it ("is outside …"), or undefined when allowed. */
function whyNot(url: string, policy: S3FacePolicy): string | undefined {
  const m = S3_URL.exec(url);
  if (!m) return 'is not an s3://bucket/key URL';
  // `.`/`..` segments could be normalised away by a client fetching the presigned URL.
  if (m[2]!.split('/').some((s) => s === '.' || s === '..')) return 'has . or .. in its key';
  const own = policy.never.find((p) => url.startsWith(p));
  if (own) return `is in ${own}, where the service keeps its own files: never a face`;
  const folder = policy.folder;
  const drop = policy.drops.find((d) => url.startsWith(d));
  if (drop && !(folder && folder.startsWith(drop) && url.startsWith(folder))) {
    return `is a drop-folder upload (${drop}) outside this manifest's folder${folder ? ` ${folder}` : ''}: never a face`;
  }
  if (policy.prefixes.some((p) => url.startsWith(p)) || (folder && url.startsWith(folder))) return undefined;
  const prefixes = policy.prefixes.length ? `FACE_PREFIXES ${policy.prefixes.join(', ')}` : 'FACE_PREFIXES, empty';
  return `is outside the faces this run may read (${prefixes}, or ${folder ? `the manifest's folder ${folder}` : "the manifest's folder: none, the manifest is not in S3"})`;
}

/**
 * The s3:// object an http(s) URL reaches on the service's own S3 — path-style or virtual-hosted, on
 * S3_ENDPOINT or S3_PUBLIC_ENDPOINT (any bucket), or on AWS (S3_BUCKET) — or undefined. Such a URL
 * (presigned by someone, or to an object readable without credentials from where the service runs)
 * is judged as the s3:// face it names, so a link cannot reach what an s3:// URL may not.
 */
export function ownS3Object(url: string, policy: Pick<S3FacePolicy, 'bucket' | 'endpoints'>): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const segments = u.pathname.split('/').slice(1);
  const decoded = (parts: string[]) => {
    try {
      return parts.map((s) => decodeURIComponent(s)).join('/');
    } catch {
      return parts.join('/');
    }
  };
  const pathStyle = () => (segments.length > 1 && segments[0] ? `s3://${decoded([segments[0]])}/${decoded(segments.slice(1))}` : undefined);
  const virtual = (bucket: string) => `s3://${bucket}/${decoded(segments)}`;
  for (const e of policy.endpoints) {
    let ep: URL;
    try {
      ep = new URL(e);
    } catch {
      continue;
    }
    if (portOf(u) !== portOf(ep)) continue;
    if (u.hostname === ep.hostname) return pathStyle();
    if (u.hostname.endsWith(`.${ep.hostname}`)) return virtual(u.hostname.slice(0, -ep.hostname.length - 1));
  }
  const aws = /^(?:(.+)\.)?s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$/.exec(u.hostname);
  if (aws) {
    const object = aws[1] ? virtual(aws[1]) : pathStyle();
    if (object?.startsWith(`s3://${policy.bucket}/`)) return object;
  }
  return undefined;
}

/**
 * Why a face may not be read under the policy: an s3:// face outside the rule, or an http(s) URL of
 * the service's own S3 naming such an object. Undefined for anything else (other kinds are judged elsewhere).
 */
export function faceRuleRefusal(url: string, policy: S3FacePolicy): string | undefined {
  if (/^s3:\/\//i.test(url)) return s3FaceRefusal(url, policy);
  if (!/^https?:\/\//i.test(url)) return undefined;
  const object = ownS3Object(url, policy);
  const why = object && whyNot(object, policy);
  return why && `${show(url)} reaches ${object} on the service's S3, which ${why}`;
}

const portOf = (u: URL) => u.port || (u.protocol === 'https:' ? '443' : '80');

/** The rule stored with a run (`options.faces`), or undefined for a run started before rules were stored. */
export function storedFaceRule(options: Record<string, unknown>): FaceRule | undefined {
  const f = options.faces as Partial<FaceRule> | undefined;
  if (!f || !Array.isArray(f.prefixes)) return undefined;
  return { prefixes: f.prefixes.map(String), ...(f.folder ? { folder: String(f.folder) } : {}), ...(f.drop ? { drop: String(f.drop) } : {}) };
}
