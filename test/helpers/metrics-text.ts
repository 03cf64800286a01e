/** `name{labels} value` lines of a Prometheus exposition, by name and label set. */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m?.[1] || !m[2]) throw new Error(`not an exposition sample: ${line}`);
    out.set(m[1], Number(m[2]));
  }
  return out;
}
