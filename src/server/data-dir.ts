/**
 * The server's data dir: the embedded store, the API token, the running server's address (so the CLI
 * needs no configuration on the same machine), a lock against two servers on one store, and the
 * hosts' state.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BerthError } from '../core/errors.js';
import { newSecret } from '../core/ids.js';

export function defaultDataDir(home = homedir()): string {
  return join(home, '.berth');
}

export interface ServerInfo {
  url: string;
  pid: number;
  agentUrl: string;
  startedAt: string;
  /** The API's certificate when it serves HTTPS: the local CLI trusts it (a self-signed one too). */
  tlsCertFile?: string;
}

export class DataDir {
  constructor(readonly path: string) {
    mkdirSync(path, { recursive: true, mode: 0o700 });
  }

  get hostsDir(): string {
    return join(this.path, 'hosts');
  }

  /** The API token: created at first start, kept (mode 0600) for the CLI and for later starts. */
  token(): { token: string; created: boolean } {
    const file = join(this.path, 'token');
    if (existsSync(file)) return { token: readFileSync(file, 'utf8').trim(), created: false };
    const token = newSecret();
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    return { token, created: true };
  }

  /** Replaces the API token (written beside, then moved over the old, so a reader sees one or the other). */
  replaceToken(token: string): void {
    const file = join(this.path, 'token');
    writeFileSync(`${file}.new`, `${token}\n`, { mode: 0o600 });
    renameSync(`${file}.new`, file);
  }

  /**
   * The id of the data dir's own token as the server last registered it (file `token.id`): when
   * the token file was replaced by hand, the next start revokes the token it replaced.
   */
  ownTokenId(): string | undefined {
    try {
      return readFileSync(join(this.path, 'token.id'), 'utf8').trim() || undefined;
    } catch {
      return undefined;
    }
  }

  setOwnTokenId(id: string): void {
    writeFileSync(join(this.path, 'token.id'), `${id}\n`, { mode: 0o600 });
  }

  /** Takes the data dir for this process; refuses when another live server holds it. */
  lock(pid = process.pid): void {
    const other = this.runningServerPid(pid);
    if (other) throw new BerthError('conflict', `another berth server (pid ${other}) is using ${this.path}`, 'Stop it first, or start this one with a different --data-dir.');
    writeFileSync(join(this.path, 'server.pid'), `${pid}\n`);
  }

  unlock(): void {
    rmSync(join(this.path, 'server.pid'), { force: true });
    rmSync(join(this.path, 'server.json'), { force: true });
  }

  /**
   * Where the embedded store's state went (`berth store copy`), if it did: a server started on this
   * data dir without that database would run on the stale copy left behind, so it refuses.
   */
  storeMoved(): { to: string; at: string } | undefined {
    try {
      return JSON.parse(readFileSync(join(this.path, 'store-moved.json'), 'utf8')) as { to: string; at: string };
    } catch {
      return undefined;
    }
  }

  /** Refuses to run on an embedded store whose state was copied elsewhere (see storeMoved). */
  assertStoreHere(): void {
    const moved = this.storeMoved();
    if (!moved) return;
    throw new BerthError('conflict', `the embedded store of ${this.path} was copied to ${moved.to} (${moved.at}) and is no longer used`, `Start the server with BERTH_DATABASE_URL set to that database, or remove ${join(this.path, 'store-moved.json')} to go on with the embedded copy as it was then.`);
  }

  markStoreMoved(to: string): void {
    writeFileSync(join(this.path, 'store-moved.json'), `${JSON.stringify({ to, at: new Date().toISOString() }, null, 2)}\n`, { mode: 0o600 });
  }

  /** The pid of the live server holding this data dir, if one does (other than `self`). */
  runningServerPid(self = process.pid): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.path, 'server.pid'), 'utf8').trim());
      return pid && pid !== self && isAlive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  writeServerInfo(info: ServerInfo): void {
    writeFileSync(join(this.path, 'server.json'), `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
  }

  readServerInfo(): ServerInfo | undefined {
    try {
      return JSON.parse(readFileSync(join(this.path, 'server.json'), 'utf8')) as ServerInfo;
    } catch {
      return undefined;
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
