/**
 * HTTPS for the router: a certificate (a wildcard for `*.<domain>`, its chain after it) and its key,
 * in PEM files. They are checked when the server starts — the pair must match, the certificate must
 * be valid now and cover the environments' names — and a bad pair stops the start with what to fix.
 * Certificates are renewed in place (certbot, cert-manager and the like rewrite or swap the files),
 * so both files are watched: a new good pair serves new connections from then on, open connections
 * keep theirs, and a pair that does not load is logged and ignored (the last good one keeps serving).
 */
import { watchFile, unwatchFile, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { BerthError } from '../core/errors.js';

export interface RouterTlsFiles {
  certFile: string;
  keyFile: string;
}

export interface TlsPair {
  cert: Buffer;
  key: Buffer;
  /** The leaf certificate's subject alternative names, as OpenSSL prints them (`DNS:*.envs.example.com`). */
  names: string;
  notAfter: Date;
  fingerprint: string;
}

/** Reads and checks a pair for environments at `NAME.<domain>`; throws a BerthError saying what is wrong. */
export function loadTlsPair(files: RouterTlsFiles, domain: string, now = new Date()): TlsPair {
  const read = (file: string, what: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new BerthError('validation_failed', `the router's TLS ${what} ${file} cannot be read: ${err instanceof Error ? err.message : String(err)}`, `Give a readable PEM file (--router-tls-${what === 'certificate' ? 'cert' : 'key'}).`);
    }
  };
  const cert = read(files.certFile, 'certificate');
  const key = read(files.keyFile, 'key');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new BerthError('validation_failed', `${files.certFile} holds no PEM certificate: ${err instanceof Error ? err.message : String(err)}`, 'Give the certificate (and its chain after it) in PEM form: -----BEGIN CERTIFICATE-----.');
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new BerthError('validation_failed', `the router's TLS key ${files.keyFile} does not go with ${files.certFile}: ${err instanceof Error ? err.message : String(err)}`, 'Give the private key the certificate was issued for, in PEM form, unencrypted.');
  }
  const notAfter = new Date(leaf.validTo);
  const notBefore = new Date(leaf.validFrom);
  if (notAfter <= now || notBefore > now) {
    throw new BerthError('validation_failed', `the router's certificate ${files.certFile} is valid from ${notBefore.toISOString()} to ${notAfter.toISOString()}, not now`, 'Renew it; berth serves the new one as soon as the files change.');
  }
  // Any name under the domain stands for every environment's: a wildcard covers all or none.
  const sample = `berth-check.${domain}`;
  if (!leaf.checkHost(sample)) {
    throw new BerthError('validation_failed', `the router's certificate is for ${leaf.subjectAltName ?? leaf.subject.replace(/\n/g, ', ')}, which does not cover the environments' names (NAME.${domain})`, `Use a certificate for *.${domain}, or --domain to match it.`);
  }
  return { cert, key, names: leaf.subjectAltName ?? '', notAfter, fingerprint: leaf.fingerprint256 };
}

/** Watches both files (by polling their stat: swaps by rename are seen too) and hands each new good pair to `onPair`. */
export class CertificateWatcher {
  private current: string;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly files: RouterTlsFiles,
    private readonly domain: string,
    loaded: TlsPair,
    private readonly onPair: (pair: TlsPair) => void,
    private readonly log: (line: string) => void,
    private readonly intervalMs = 2000,
  ) {
    this.current = loaded.fingerprint + loaded.key.toString('base64');
  }

  start(): void {
    const changed = () => this.changed();
    for (const file of [this.files.certFile, this.files.keyFile]) watchFile(file, { interval: this.intervalMs, persistent: false }, changed);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const file of [this.files.certFile, this.files.keyFile]) unwatchFile(file);
  }

  /** Both files are often written one after the other: read them once the second had time to land. */
  private changed(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reload(), 200);
    this.timer.unref();
  }

  private reload(): void {
    let pair: TlsPair;
    try {
      pair = loadTlsPair(this.files, this.domain);
    } catch (err) {
      this.log(`router: the changed TLS files were not loaded, the previous certificate keeps serving: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    const id = pair.fingerprint + pair.key.toString('base64');
    if (id === this.current) return;
    this.current = id;
    this.onPair(pair);
    this.log(`router: serving the new certificate (${pair.names}, valid until ${pair.notAfter.toISOString()})`);
  }
}
