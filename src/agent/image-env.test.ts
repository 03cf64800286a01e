import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readImageEnv } from './image-env.js';

describe('readImageEnv', () => {
  it('reads KEY="json" lines, skips and reports bad ones, and treats a missing file as no env', () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-image-env-'));
    const file = join(dir, 'image.env');
    writeFileSync(file, 'PORT="8080"\nGREETING="a \\"quoted\\" line\\nand more"\nbad line\n1X="no"\n\n');
    const logged: string[] = [];
    expect(readImageEnv(file, (l) => logged.push(l))).toEqual({ PORT: '8080', GREETING: 'a "quoted" line\nand more' });
    expect(logged).toEqual([`${file}:3: not KEY="value"; skipped`, `${file}:4: not KEY="value"; skipped`]);
    expect(readImageEnv(join(dir, 'missing'), () => undefined)).toEqual({});
  });
});
