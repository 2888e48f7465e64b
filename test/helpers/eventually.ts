// Waiting for something another part of the stack does: resolves once `condition` holds, fails with
// `what` when it does not within `timeoutMs`. Never a sleep that proves nothing happened.
export async function eventually<T>(condition: () => T | Promise<T>, what: string, timeoutMs = 30_000, everyMs = 50): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await condition();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
