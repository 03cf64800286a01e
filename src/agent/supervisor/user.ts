/** Resolves a service's `user` from the host's /etc/passwd (no NSS: hosts keep their users there). */
import { readFileSync } from 'node:fs';

export interface ResolvedUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export class UnknownUserError extends Error {
  override readonly name = 'UnknownUserError';
}

/** By name or numeric uid; throws UnknownUserError when /etc/passwd has no such entry. */
export function resolveUser(user: string, passwdPath = '/etc/passwd'): ResolvedUser {
  let text: string;
  try {
    text = readFileSync(passwdPath, 'utf8');
  } catch (e) {
    throw new UnknownUserError(`cannot read ${passwdPath} to resolve user ${JSON.stringify(user)}: ${(e as Error).message}`);
  }
  const byUid = /^\d+$/.test(user);
  for (const line of text.split('\n')) {
    const [name, , uid, gid, , home] = line.split(':');
    if (name === undefined || uid === undefined || gid === undefined) continue;
    if (byUid ? uid !== user : name !== user) continue;
    const entry = { name, uid: Number(uid), gid: Number(gid), home: home || '/' };
    if (Number.isInteger(entry.uid) && Number.isInteger(entry.gid)) return entry;
  }
  throw new UnknownUserError(`user ${JSON.stringify(user)} does not exist in ${passwdPath}`);
}
