// The AWS SDK prints a 9-line NodeVersionSupportWarning on every command under Node 20 (its versions
// published after January 2027 will need Node 22). The lockfile pins SDK versions that support
// Node 20, so the warning only buries our output: silence exactly it, with the SDK's own switch
// (read when the first S3Client is built). Imported before anything builds a client.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
