/**
 * One berth server per PostgreSQL database. Every server treats every host, pool, command and
 * environment in its store as its own — it refills the pools, checks and replaces the hosts, and
 * recovers what is half-done at its start — so a second server on the same database would launch
 * beside the first and mark the first one's hosts lost (see docs: "One server per store"). The
 * server holds a session-level advisory lock on a connection of its own for as long as it runs:
 * a second one is refused at its start, saying who holds the database; a server that dies (even
 * by kill -9) lets go with its connection. The embedded store has the data dir's lock instead.
 */
import type pg from 'pg';
import { BerthError, errorMessage } from '../core/errors.js';

/** pg_try_advisory_lock(int4, int4): 'bert' and 1. pg_locks shows it as classid / objid, objsubid 2. */
const LOCK = [0x62657274, 1] as const;
const NO_HOLDER = 'it let go just now; start again';

export interface DatabaseLockOptions {
  /** Who this is (`berth server pid 4242 on build-1`), for another server's message. */
  holder: string;
  log: (line: string) => void;
  /** After the connection holding the lock dropped, how long until it is taken again; default 5 s. */
  retakeMs?: number;
  /**
   * A standby (`berth server --standby`): while another server holds the database, wait — told
   * who holds it, each time that changes — and take it when it lets go, instead of refusing.
   */
  standby?: { onWaiting: (holder: string) => void; pollMs?: number };
  /**
   * The lock was lost and another server holds the database now (a standby took over while this
   * server's connection was down): this server must stop acting on it. Called once.
   */
  onTaken?: (holder: string) => void;
}

export class DatabaseLock {
  private client: pg.Client;
  private retake: NodeJS.Timeout | undefined;
  private released = false;
  private taken = false;

  private constructor(
    private readonly Client: typeof pg.Client,
    private readonly url: string,
    private readonly opts: DatabaseLockOptions,
    client: pg.Client,
  ) {
    this.client = client;
    this.watch(client);
  }

  /** Takes the database for this server, or throws a `conflict` naming the server that has it (a standby waits instead). */
  static async take(Client: typeof pg.Client, url: string, opts: DatabaseLockOptions): Promise<DatabaseLock> {
    const client = await connect(Client, url, opts.holder);
    try {
      const { standby } = opts;
      let last = '';
      while (!(await tryLock(client))) {
        const holder = await describeHolder(client);
        if (!standby) throw new BerthError('conflict', `another berth server is using this database: ${holder}`, 'Stop it first, or give this server a database of its own: two servers on one database would each treat the other\'s hosts as their own (refill, mark lost, replace). Or start it with --standby to take over when the other stops.');
        if (holder !== last) standby.onWaiting(holder);
        last = holder;
        await new Promise((resolve) => setTimeout(resolve, standby.pollMs ?? 1_000));
      }
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    return new DatabaseLock(Client, url, opts, client);
  }

  async release(): Promise<void> {
    this.released = true;
    clearTimeout(this.retake);
    await this.client.end().catch(() => {});
  }

  /** The connection dropped (the database restarted, the network broke): the lock went with it; take it again. */
  private watch(client: pg.Client): void {
    const lost = (why: string) => {
      if (this.released || this.client !== client || this.retake) return;
      this.opts.log(`database lock: the connection holding it failed (${why}); taking it again`);
      this.scheduleRetake();
    };
    client.on('error', (err) => lost(err.message));
    client.on('end', () => lost('closed'));
  }

  private scheduleRetake(): void {
    clearTimeout(this.retake);
    this.retake = setTimeout(() => void this.takeAgain(), this.opts.retakeMs ?? 5_000);
    this.retake.unref();
  }

  private async takeAgain(): Promise<void> {
    this.retake = undefined;
    let client: pg.Client | undefined;
    try {
      client = await connect(this.Client, this.url, this.opts.holder);
      if (this.released) return void (await client.end());
      if (await tryLock(client)) {
        this.client = client;
        this.watch(client);
        this.opts.log('database lock: taken again');
        return;
      }
      const holder = await describeHolder(client);
      await client.end();
      this.opts.log(`database lock: ANOTHER SERVER TOOK THIS DATABASE (${holder})`);
      if (!this.taken) {
        this.taken = true;
        this.opts.onTaken?.(holder);
      }
    } catch (err) {
      this.opts.log(`database lock: cannot take it again yet: ${errorMessage(err)}`);
      await client?.end().catch(() => {});
    }
    this.scheduleRetake();
  }
}

async function connect(Client: typeof pg.Client, url: string, holder: string): Promise<pg.Client> {
  // The name PostgreSQL shows for this session (pg_stat_activity) is how a second server says who holds the lock.
  const client = new Client({ connectionString: url, application_name: holder.slice(0, 63) });
  await client.connect();
  return client;
}

async function tryLock(client: pg.Client): Promise<boolean> {
  const res = await client.query<{ locked: boolean }>('select pg_try_advisory_lock($1, $2) as locked', [LOCK[0], LOCK[1]]);
  return res.rows[0]?.locked === true;
}

async function describeHolder(client: pg.Client): Promise<string> {
  const res = await client.query<{ application_name: string; client_addr: string | null; backend_start: Date }>(
    `select a.application_name, host(a.client_addr) as client_addr, a.backend_start
       from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.granted and l.classid = $1 and l.objid = $2 and l.objsubid = 2`,
    [LOCK[0], LOCK[1]],
  );
  const row = res.rows[0];
  if (!row) return NO_HOLDER;
  const from = row.client_addr ? ` from ${row.client_addr}` : '';
  return `${row.application_name || 'a server'}${from}, connected since ${row.backend_start.toISOString()}`;
}

/**
 * Which server holds the database at `url` (its name and since when), or undefined when none does;
 * throws when the database cannot be reached. For `berth doctor`: which server of a pair is active.
 */
export async function databaseHolder(Client: typeof pg.Client, url: string): Promise<string | undefined> {
  const client = new Client({ connectionString: url, application_name: 'berth doctor' });
  await client.connect();
  try {
    const holder = await describeHolder(client);
    return holder === NO_HOLDER ? undefined : holder;
  } finally {
    await client.end();
  }
}
