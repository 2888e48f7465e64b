// The manifest: reading a CSV into checked rows, naming rows (keys), and writing manifest text back
// into report cells. Shared by the producer, finalize and the contact sheet.
export { escapeCell, unescapeCell } from './cells.ts';
export { ManifestError } from './errors.ts';
export { FACE_COLUMNS, FaceClassifier, decodeDataFace, type FaceKind, type FaceOptions } from './faces.ts';
export { faceRuleFor, faceRuleRefusal, ownS3Object, s3FacePolicy, s3FaceRefusal, storedFaceRule, type FaceRule, type FaceRuleSettings, type S3FacePolicy } from './faceRule.ts';
export { InputsDigest } from './inputsDigest.ts';
export { readManifest, readOptionsFor, type ReadManifestOptions } from './reader.ts';
export { isRejected, type ManifestRow, type RejectedRow, type ValidRow } from './row.ts';
export { GENERATED_KEY, MAX_ROW_KEY, isReservedId, lineKey, toRowKey } from './rowKey.ts';
