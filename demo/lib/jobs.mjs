/**
 * The api's jobs: in memory, and in DATA_DIR/jobs.json, written whole to a temporary file, synced
 * and renamed over the old one, so a crash leaves the old file or the new one, never half of one.
 *
 * Every change bumps a revision; each job keeps the revision of its last change, so a reader can ask
 * for what changed since the revision it has (`since`). The file's epoch changes only when the file
 * is new: a reader that sees another epoch starts over.
 *
 * A job is pending, then running (claimed by a worker, with a lease), then done. A running job whose
 * lease ends (its worker died) is pending again.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';

export const MAX_JOBS = 500;
export const MAX_TEXT = 10_000;
export const STATUSES = ['pending', 'running', 'done'];

export class JobStore {
  #jobs = new Map(); // id → job, in creation order
  #seq = 0; // changes made
  #saved = 0; // changes on disk
  #writing = Promise.resolve();

  constructor(dataDir, log) {
    this.log = log;
    mkdirSync(dataDir, { recursive: true });
    this.dir = dataDir;
    this.file = join(dataDir, 'jobs.json');
    // What a crash mid-write left: never the data, which is only ever renamed into place.
    for (const name of readdirSync(dataDir)) if (name.startsWith('jobs.json.tmp-')) rmSync(join(dataDir, name), { force: true });
    this.epoch = randomBytes(6).toString('hex');
    this.rev = 0;
    this.#load();
  }

  #load() {
    let text;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if (err.code === 'ENOENT') return;
      throw err;
    }
    try {
      const data = JSON.parse(text);
      if (data?.version !== 1 || !Array.isArray(data.jobs)) throw new Error('not a jobs file');
      this.epoch = String(data.epoch);
      this.rev = Number(data.rev) || 0;
      for (const job of data.jobs) this.#jobs.set(job.id, job);
    } catch (err) {
      // Kept for a human to look at; the service starts empty instead of crash-looping.
      const aside = `${this.file}.corrupt-${Date.now()}`;
      renameSync(this.file, aside);
      this.log(`${this.file} is unreadable (${err.message}); moved to ${aside}, starting empty`);
    }
  }

  get size() {
    return this.#jobs.size;
  }

  get(id) {
    return this.#jobs.get(id);
  }

  /** Oldest first. `since`: changed after that revision (by revision); `status`: in that state. */
  list({ since, status, limit = 100 }) {
    let jobs = [...this.#jobs.values()];
    if (status) jobs = jobs.filter((job) => job.status === status);
    if (since !== undefined) {
      jobs = jobs.filter((job) => job.rev > since).sort((a, b) => a.rev - b.rev);
      const more = jobs.length > limit;
      jobs = jobs.slice(0, limit);
      return { jobs, rev: more ? jobs[jobs.length - 1].rev : this.rev, more };
    }
    return { jobs: jobs.slice(-limit), rev: this.rev, more: false };
  }

  /** A new pending job, or undefined when the queue is full of unfinished ones. */
  create(text) {
    if (this.#jobs.size >= MAX_JOBS) {
      const oldestDone = [...this.#jobs.values()].find((job) => job.status === 'done');
      if (!oldestDone) return undefined;
      this.#jobs.delete(oldestDone.id);
    }
    let id;
    do id = randomBytes(6).toString('hex');
    while (this.#jobs.has(id));
    const now = new Date().toISOString();
    const job = { id, text, status: 'pending', createdAt: now, updatedAt: now, rev: 0 };
    this.#jobs.set(id, job);
    return this.#changed(job);
  }

  /** Applies `change` to the job and gives it the next revision. */
  update(job, change) {
    Object.assign(job, change, { updatedAt: new Date().toISOString() });
    for (const [key, value] of Object.entries(job)) if (value === undefined) delete job[key];
    return this.#changed(job);
  }

  #changed(job) {
    this.rev += 1;
    job.rev = this.rev;
    this.#seq += 1;
    return job;
  }

  /** Running jobs whose lease ended are pending again; returns how many. */
  requeueExpired(now = Date.now()) {
    let count = 0;
    for (const job of this.#jobs.values()) {
      if (job.status === 'running' && Date.parse(job.leaseUntil) < now) {
        this.update(job, { status: 'pending', worker: undefined, leaseUntil: undefined });
        count++;
      }
    }
    return count;
  }

  /**
   * Resolves once every change made so far is on disk. Writes run one at a time, each of the whole
   * current state, so a burst of changes costs a write or two, not one per change.
   */
  save() {
    const wanted = this.#seq;
    const write = this.#writing.then(async () => {
      if (this.#saved >= wanted) return;
      const seq = this.#seq;
      await this.#writeFile(JSON.stringify({ version: 1, epoch: this.epoch, rev: this.rev, jobs: [...this.#jobs.values()] }));
      this.#saved = seq;
    });
    this.#writing = write.catch(() => undefined);
    return write;
  }

  async #writeFile(text) {
    const tmp = `${this.file}.tmp-${process.pid}`;
    const handle = await open(tmp, 'w', 0o644);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, this.file);
    // The rename itself reaches the disk once the directory is synced.
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
