/**
 * The `.env` files of a stack's config layers. What is supported, and nothing more (no expansion):
 *
 *   # a comment line; blank lines are skipped
 *   NAME=value               # unquoted: up to an inline comment (a "#" after whitespace), trimmed
 *   export NAME=value        # "export " is allowed and ignored, so the file can be sourced by a shell
 *   NAME = value             # whitespace around the name and "=" is ignored
 *   NAME='literal $value'    # single quotes: taken as written, no escapes; may span lines
 *   NAME="a\nb \"q\" \\"     # double quotes: \n \r \t \" \\ \$ are escapes (others stay as written); may span lines
 *   NAME=                    # the empty string (NOT an unset: an empty file in the envdir unsets)
 *
 * `${OTHER}` and `$OTHER` are NOT expanded: values are literal text, so where a value came from
 * never depends on another variable. A later line for the same name replaces an earlier one. Names
 * are ^[A-Za-z_][A-Za-z0-9_]*$. Messages never contain a value: it may be a secret.
 */
import type { SpecIssue } from '../images/spec-reader.js';
import { ENV_NAME_PATTERN } from '../protocol/messages.js';
import { ENV_NAME_RULE } from './spec-service.js';

export interface DotenvEntry {
  name: string;
  value: string;
  /** 1-based line of the name. */
  line: number;
}

const LINE_HINT = 'Write one variable per line as NAME=value (quotes optional, "#" starts a comment).';
const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', '"': '"', '\\': '\\', $: '$' };

/** The file's variables in order, and a located issue per bad line (which is left out). */
export function parseDotenv(text: string, file: string): { entries: DotenvEntry[]; issues: SpecIssue[] } {
  const lines = text.split('\n').map((line) => line.replace(/\r$/, ''));
  const entries: DotenvEntry[] = [];
  const issues: SpecIssue[] = [];
  const report = (line: number, column: number, message: string, hint = LINE_HINT): void => {
    issues.push({ file, line, column, path: '', message, hint });
  };
  for (let index = 0; index < lines.length; index++) {
    const lineNo = index + 1;
    const line = lines[index] ?? '';
    const body = line.trimStart();
    if (body === '' || body.startsWith('#')) continue;
    let column = line.length - body.length + 1;
    const exported = /^export\s+/.exec(body);
    const rest = exported ? body.slice(exported[0].length) : body;
    if (exported) column += exported[0].length;
    const eq = rest.indexOf('=');
    if (eq < 0) {
      report(lineNo, column, 'expected NAME=value');
      continue;
    }
    const name = rest.slice(0, eq).trimEnd();
    if (!ENV_NAME_PATTERN.test(name)) {
      report(lineNo, column, `bad variable name ${JSON.stringify(name)}`, ENV_NAME_RULE);
      continue;
    }
    const afterEq = rest.slice(eq + 1);
    const valueText = afterEq.trimStart();
    const valueColumn = column + eq + 1 + (afterEq.length - valueText.length);
    const quote = valueText[0];
    if (quote !== '"' && quote !== "'") {
      // An inline comment starts at a "#" at the start or after whitespace: `a#b` is a value.
      entries.push({ name, value: valueText.replace(/(^|\s)#.*$/, '').trimEnd(), line: lineNo });
      continue;
    }
    const quoted = readQuoted(lines, index, valueText, quote);
    if (!quoted) {
      report(lineNo, valueColumn, `unterminated ${quote === '"' ? 'double' : 'single'}-quoted value of ${name}`, `Close the value with ${quote}.`);
      break; // everything after an unclosed quote belongs to it: there is nothing more to check
    }
    if (!/^\s*(#.*)?$/.test(quoted.after)) {
      report(quoted.endLine + 1, 1, `unexpected text after the closing quote of ${name}`, 'Put a comment after a "#", or quote the whole value.');
    } else {
      entries.push({ name, value: quoted.value, line: lineNo });
    }
    index = quoted.endLine;
  }
  return { entries, issues };
}

/**
 * The value of a quoted `valueText` (which starts with its quote) on line `index`, continued on the
 * following lines until the closing quote; undefined when there is none.
 */
function readQuoted(lines: readonly string[], index: number, valueText: string, quote: '"' | "'"): { value: string; after: string; endLine: number } | undefined {
  let value = '';
  let text = valueText.slice(1);
  for (let lineIndex = index; lineIndex < lines.length; ) {
    for (let i = 0; i < text.length; i++) {
      const char = text[i] ?? '';
      if (char === quote) return { value, after: text.slice(i + 1), endLine: lineIndex };
      if (quote === '"' && char === '\\' && i + 1 < text.length) {
        const next = text[i + 1] ?? '';
        value += ESCAPES[next] ?? `\\${next}`;
        i++;
      } else {
        value += char;
      }
    }
    lineIndex++;
    if (lineIndex >= lines.length) break;
    value += '\n';
    text = lines[lineIndex] ?? '';
  }
  return undefined;
}
