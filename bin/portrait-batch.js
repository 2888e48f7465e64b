#!/usr/bin/env node
// Thin launcher: the project runs its TypeScript sources directly through tsx (no build step).
import { register } from 'tsx/esm/api';

// Only the AWS SDK's NodeVersionSupportWarning is silenced (see src/core/awsNodeWarning.ts: the
// lockfile pins SDK versions that support Node 20); every other warning still prints.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

register();
await import('../src/cli.ts');
