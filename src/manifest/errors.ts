// How the manifest code reports problems: ManifestError for the file as a whole, and the helpers that
// put a value or an underlying error into a one-line message.

/** A problem with the manifest as a whole: nothing of it is submitted. The message is one line. */
export class ManifestError extends Error {
  override name = 'ManifestError';
}

/** A value in a message: quoted, escaped (one line), long ones cut. */
export function show(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
}

export const firstLine = (s: string) => s.split(/\r?\n/, 1)[0] ?? '';
