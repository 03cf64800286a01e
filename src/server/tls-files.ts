/**
 * HTTPS from a certificate (its chain after it) and key in PEM files, for the router
 * (`--router-tls-cert/--router-tls-key`) and the API (`--tls-cert/--tls-key`). A pair is checked
 * when the server starts — it must match, be valid now and, for the router, cover the environments'
 * names — and a bad one stops the start with what to fix. Certificates are renewed in place
 * (certbot, cert-manager and the like rewrite or swap the files), so both files are watched: a new
 * good pair serves new connections from then on, open connections keep theirs, and a pair that does
 * not load is logged and ignored (the last good one keeps serving).
 */
import { watchFile, unwatchFile, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { isIP } from 'node:net';
import { BerthError } from '../core/errors.js';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/** Whose pair it is: for messages, and the name it must cover. */
export interface TlsUse {
  /** `router`, `API`: "the router's certificate …". */
  owner: string;
  /** The options that name the files, without -cert/-key: `--router-tls`, `--tls`. */
  flag: string;
  /** A name the certificate must cover, what it stands for, and what to do when it does not. */
  covers?: { name: string; what: string; hint: string };
}

/** The router's: any name under the domain stands for every environment's (a wildcard covers all or none). */
export function routerTlsUse(domain: string): TlsUse {
  return { owner: 'router', flag: '--router-tls', covers: { name: `berth-check.${domain}`, what: `the environments' names (NAME.${domain})`, hint: `Use a certificate for *.${domain}, or --domain to match it.` } };
}

/** The API's: clients reach it by whatever name or address they were given, so no name is checked. */
export const API_TLS_USE: TlsUse = { owner: 'API', flag: '--tls' };

export interface TlsPair {
  cert: Buffer;
  key: Buffer;
  /** The leaf certificate's subject alternative names, as OpenSSL prints them (`DNS:*.envs.example.com`). */
  names: string;
  notAfter: Date;
  fingerprint: string;
}

/** Reads and checks a pair; throws a BerthError saying what is wrong and what to do. */
export function loadTlsPair(files: TlsFiles, use: TlsUse, now = new Date()): TlsPair {
  const bad = (message: string, hint: string) => new BerthError('validation_failed', message, hint);
  const read = (file: string, what: 'certificate' | 'key'): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw bad(`the ${use.owner}'s TLS ${what} ${file} cannot be read: ${err instanceof Error ? err.message : String(err)}`, `Give a readable PEM file (${use.flag}-${what === 'certificate' ? 'cert' : 'key'}).`);
    }
  };
  const cert = read(files.certFile, 'certificate');
  const key = read(files.keyFile, 'key');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw bad(`${files.certFile} holds no PEM certificate: ${err instanceof Error ? err.message : String(err)}`, 'Give the certificate (and its chain after it) in PEM form: -----BEGIN CERTIFICATE-----.');
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw bad(`the ${use.owner}'s TLS key ${files.keyFile} does not go with ${files.certFile}: ${err instanceof Error ? err.message : String(err)}`, 'Give the private key the certificate was issued for, in PEM form, unencrypted.');
  }
  const notAfter = new Date(leaf.validTo);
  const notBefore = new Date(leaf.validFrom);
  if (notAfter <= now || notBefore > now) {
    throw bad(`the ${use.owner}'s certificate ${files.certFile} is valid from ${notBefore.toISOString()} to ${notAfter.toISOString()}, not now`, 'Renew it; berth serves the new one as soon as the files change.');
  }
  const names = leaf.subjectAltName ?? leaf.subject.replace(/\n/g, ', ');
  const pair = { cert, key, names, notAfter, fingerprint: leaf.fingerprint256 };
  assertCovers(pair, use);
  return pair;
}

/** Throws, saying what to do, when the pair's certificate does not cover the name (or address) `use` needs. */
export function assertCovers(pair: TlsPair, use: TlsUse): void {
  if (!use.covers) return;
  const leaf = new X509Certificate(pair.cert);
  if (!(isIP(use.covers.name) ? leaf.checkIP(use.covers.name) : leaf.checkHost(use.covers.name))) {
    throw new BerthError('validation_failed', `the ${use.owner}'s certificate is for ${pair.names}, which does not cover ${use.covers.what}`, use.covers.hint);
  }
}

export interface WatchOptions {
  /** How often the files' stat is polled; default 2 s. */
  intervalMs?: number;
  /** A check of the owner's own a new pair must pass (undefined), else why it is not served. */
  accept?: (pair: TlsPair) => Promise<string | undefined>;
}

/** Watches both files (by polling their stat: swaps by rename are seen too) and hands each new good pair to `onPair`. */
export class CertificateWatcher {
  private current: string;
  private timer: NodeJS.Timeout | undefined;

  private serving: TlsPair;

  constructor(
    private readonly files: TlsFiles,
    private readonly use: TlsUse,
    loaded: TlsPair,
    private readonly onPair: (pair: TlsPair) => void,
    private readonly log: (line: string) => void,
    private readonly opts: WatchOptions = {},
  ) {
    this.current = loaded.fingerprint + loaded.key.toString('base64');
    this.serving = loaded;
  }

  /** The pair served now (for its expiry in /metrics). */
  get pair(): TlsPair {
    return this.serving;
  }

  start(): void {
    const changed = () => this.changed();
    for (const file of [this.files.certFile, this.files.keyFile]) watchFile(file, { interval: this.opts.intervalMs ?? 2000, persistent: false }, changed);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const file of [this.files.certFile, this.files.keyFile]) unwatchFile(file);
  }

  /** Both files are often written one after the other: read them once the second had time to land. */
  private changed(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload(), 200);
    this.timer.unref();
  }

  private async reload(): Promise<void> {
    const notLoaded = (why: string) => this.log(`${this.use.owner}: the changed TLS files were not loaded, the previous certificate keeps serving: ${why}`);
    let pair: TlsPair;
    try {
      pair = loadTlsPair(this.files, this.use);
    } catch (err) {
      notLoaded(err instanceof Error ? err.message : String(err));
      return;
    }
    const id = pair.fingerprint + pair.key.toString('base64');
    if (id === this.current) return;
    const refused = await this.opts.accept?.(pair);
    if (refused !== undefined) {
      notLoaded(refused);
      return;
    }
    this.current = id;
    this.onPair(pair);
    this.serving = pair;
    this.log(`${this.use.owner}: serving the new certificate (${pair.names}, valid until ${pair.notAfter.toISOString()})`);
  }
}

/** A certificate served and watched for renewals (a CertificateWatcher, or one with more to watch). */
export interface WatchedCertificate {
  start(): void;
  stop(): void;
  readonly pair: TlsPair;
}

/** The certificates a server serves, by listener (`api`, `agent`, `router`): for /metrics, and their watchers stop with it. */
export class ServedCertificates {
  private readonly served = new Map<string, () => TlsPair>();
  private readonly watchers: WatchedCertificate[] = [];

  /** Starts `watcher` and reports what it serves as `listener`'s. */
  watch(listener: string, watcher: WatchedCertificate): void {
    watcher.start();
    this.watchers.push(watcher);
    this.served.set(listener, () => watcher.pair);
  }

  /** A listener whose certificate is watched elsewhere (the router's, with the router). */
  add(listener: string, pair: () => TlsPair): void {
    this.served.set(listener, pair);
  }

  list(): Array<{ listener: string; notAfter: Date }> {
    return [...this.served].map(([listener, pair]) => ({ listener, notAfter: pair().notAfter }));
  }

  stop(): void {
    for (const watcher of this.watchers) watcher.stop();
  }
}
