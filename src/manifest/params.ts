// Model parameter cells: one non-empty, trimmed cell of a parameter column → its typed value (checked
// against the model's input schema), or why it is refused.
import type { ZodType } from 'zod';
import { IMAGE_SIZE_PRESETS, imageSizeSchema, modelParamsSchema, type ModelParam } from '../core/modelInput.ts';
import { firstLine, show } from './errors.ts';

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const WIDTH_X_HEIGHT = /^(\d+)\s*[xX]\s*(\d+)$/;
const TRUE = new Set(['true', '1', 'yes']);
const FALSE = new Set(['false', '0', 'no']);
const PRESETS = new Set<string>(IMAGE_SIZE_PRESETS);
const sizeObjectSchema = imageSizeSchema.options[1];

export type ParamResult = { value: unknown } | { reason: string };

/** One non-empty, trimmed parameter cell → its typed value, or why it is refused. */
export function parseParam(param: ModelParam, v: string): ParamResult {
  let value: unknown;
  let schema: ZodType = modelParamsSchema.shape[param];
  switch (param) {
    case 'sync_mode':
    case 'enable_safety_checker': {
      const l = v.toLowerCase();
      if (!TRUE.has(l) && !FALSE.has(l)) return { reason: `${show(v)} is not true/false (also accepted: 1/0, yes/no)` };
      value = TRUE.has(l);
      break;
    }
    case 'guidance_scale':
    case 'num_inference_steps':
    case 'seed':
    case 'num_images':
    case 'lora_scale':
      if (!DECIMAL.test(v)) return { reason: `${show(v)} is not a number${v.includes(',') ? ' (use . as the decimal separator)' : ''}` };
      value = Number(v);
      break;
    case 'image_size': {
      const m = WIDTH_X_HEIGHT.exec(v);
      if (m) {
        value = { width: Number(m[1]), height: Number(m[2]) };
        schema = sizeObjectSchema;
      } else if (PRESETS.has(v.toLowerCase())) {
        value = v.toLowerCase();
      } else {
        return { reason: `${show(v)} is not one of ${IMAGE_SIZE_PRESETS.join(', ')} or WIDTHxHEIGHT (e.g. 768x1024)` };
      }
      break;
    }
    case 'output_format':
      value = v.toLowerCase() === 'jpg' ? 'jpeg' : v.toLowerCase();
      break;
    case 'acceleration':
      value = v.toLowerCase();
      break;
    case 'prompt':
      value = v.replace(/\r\n?/g, '\n');
      break;
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return { value: parsed.data };
  return { reason: `${show(v)} ${describeIssue(parsed.error.issues[0] as Issue | undefined)}` };
}

interface Issue {
  code: string;
  message: string;
  path: PropertyKey[];
  origin?: string;
  expected?: string;
  minimum?: unknown;
  maximum?: unknown;
  values?: unknown[];
}

function describeIssue(issue: Issue | undefined): string {
  if (!issue) return 'is not valid';
  const of = issue.path.length ? ` (${issue.path.map(String).join('.')})` : '';
  switch (issue.code) {
    case 'too_small':
      return `is below the minimum ${String(issue.minimum)}${of}`;
    case 'too_big':
      return issue.origin === 'string' ? `is longer than ${String(issue.maximum)} characters` : `is above the maximum ${String(issue.maximum)}${of}`;
    case 'invalid_value':
      return `is not one of ${(issue.values ?? []).map(String).join(', ')}`;
    case 'invalid_type':
      return issue.expected === 'int' ? `is not a whole number${of}` : `is not a valid ${issue.expected ?? 'value'}${of}`;
    default:
      return `is not valid: ${firstLine(issue.message)}${of}`;
  }
}
