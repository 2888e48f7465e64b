// The Redis keys the dashboard owns (beside the run and row keys in src/core/keys.ts). Each has a TTL.
export const dashboardKeys = {
  /** String: a signed-in browser's session (the cookie holds only its id); TTL policy.dashboard.sessionSeconds. */
  session: (id: string) => `pb:ui:session:${id}`,
  /** Counter: wrong tokens from one client address within the window (TTL signInWindowSeconds). */
  signInFailures: (client: string) => `pb:ui:signin:${client}:failures`,
  /** String: the client address is locked out while it exists (TTL: the lockout). */
  signInLock: (client: string) => `pb:ui:signin:${client}:lock`,
  /** Counter: lockouts of the client address lately (TTL lockoutMemorySeconds); each one doubles the next. */
  signInLockouts: (client: string) => `pb:ui:signin:${client}:lockouts`,
};
