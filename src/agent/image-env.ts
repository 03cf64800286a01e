/**
 * The environment an image's `env` steps set (/etc/berth/image.env, one `KEY="json string"` per
 * line), applied to the agent's own environment at start so every command run on the host sees it,
 * as build steps did. A missing file is an image without env steps; a bad line is skipped and said.
 */
import { readFileSync } from 'node:fs';
const LINE = /^([A-Za-z_][A-Za-z0-9_]*)=(".*")$/;

export function readImageEnv(path: string, log: (line: string) => void): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return {};
  }
  const env: Record<string, string> = {};
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    const match = LINE.exec(line);
    let value: unknown;
    try {
      value = match?.[2] ? JSON.parse(match[2]) : undefined;
    } catch {
      value = undefined;
    }
    if (match?.[1] && typeof value === 'string') env[match[1]] = value;
    else log(`${path}:${i + 1}: not KEY="value"; skipped`);
  }
  return env;
}
