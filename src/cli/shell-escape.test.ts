/** The shell CLI's escape, as ssh's: only `~.` at the start of a line leaves; everything else is sent as typed. */
import { describe, expect, it } from 'vitest';
import { EscapeReader } from './shell-command.js';

function typing(...keys: string[]): { sent: string; left: boolean } {
  let left = false;
  const reader = new EscapeReader(() => (left = true));
  let sent = '';
  for (const key of keys) {
    if (left) break;
    sent += reader.read(Buffer.from(key)).toString();
  }
  return { sent, left };
}

describe('EscapeReader', () => {
  it('leaves on ~. at the start of the session or after Enter', () => {
    expect(typing('~', '.')).toEqual({ sent: '', left: true });
    expect(typing('l', 's', '\r', '~', '.')).toEqual({ sent: 'ls\r', left: true });
  });

  it('sends ~ as typed anywhere else, and ~~ as one ~', () => {
    expect(typing('c', 'd', ' ', '~', '.')).toEqual({ sent: 'cd ~.', left: false });
    expect(typing('~', '/', 'x')).toEqual({ sent: '~/x', left: false });
    expect(typing('~', '~', '.')).toEqual({ sent: '~.', left: false });
    expect(typing('\r~~.')).toEqual({ sent: '\r~.', left: false });
  });

  it('passes a paste through whole', () => {
    expect(typing('echo a ~. b\rls ~/\r')).toEqual({ sent: 'echo a ~. b\rls ~/\r', left: false });
  });
});
