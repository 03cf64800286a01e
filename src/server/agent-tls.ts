/**
 * The agent channel over TLS (`--agent-tls-cert/--agent-tls-key [--agent-tls-ca]`): agents dial
 * `wss://`, fleet machines enrol and hosts fetch slugs over `https://` on the same port, so a
 * host's token, a pool's enrolment secret and everything sent to a host cross the network
 * encrypted and only to this server.
 *
 * Agents trust what they are given (AgentBootstrap's `ca`, in the host's identity or a fleet's boot
 * script; later `trust` frames, which they keep): the CA file when there is one, the certificate
 * itself when it is self-signed, else nothing (the system's roots, for a public CA). Whether they
 * will accept the certificate is checked the way they check it — a TLS handshake against it with
 * exactly that trust — before the server starts, and again for each renewal and each change of the
 * CA file: a certificate the agents would refuse, or a CA file that does not trust the certificate
 * served, would cut every host off, so neither is taken (the last good one stays).
 */
import { connect, createServer, rootCertificates } from 'node:tls';
import { isIP } from 'node:net';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { BerthError } from '../core/errors.js';
import { assertCovers, CertificateWatcher, loadTlsPair, type TlsFiles, type TlsPair, type TlsUse, type WatchedCertificate } from './tls-files.js';

export interface AgentTlsFiles extends TlsFiles {
  /** The CA (PEM, one or more certificates) agents are told to trust; needed for a private CA. */
  caFile?: string;
}

/**
 * The agent channel's certificate and what agents are told to trust. The CA file is watched too:
 * a changed bundle that still trusts the certificate served now is handed to every connected agent
 * (`trust`, kept in its identity) and to every host launched from then on, so a CA rolls over
 * without a host noticing — add the new CA beside the old, renew the certificate from the new, then
 * drop the old.
 */
export class AgentTls {
  private bundle: string | undefined;
  private caTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly files: AgentTlsFiles,
    readonly pair: TlsPair,
    ca: string | undefined,
  ) {
    this.bundle = ca;
  }

  /** What agents trust (PEM); undefined: the system's roots. */
  get ca(): string | undefined {
    return this.bundle;
  }

  /** The check a renewal must pass too (CertificateWatcher's accept): undefined, or what is wrong. */
  accepts = (pair: TlsPair): Promise<string | undefined> => handshakeProblem(pair, this.bundle);

  /**
   * Serves renewals to `gateway`: of the pair (only one the agents accept, see accepts) and of the
   * CA file (a bundle that still trusts the certificate served, told to every connected agent).
   */
  watch(dialHost: string, gateway: { setCertificate(pair: TlsPair): void; sendTrust(ca: string): void }, log: (line: string) => void, intervalMs = 2000): WatchedCertificate {
    const certificate = new CertificateWatcher(this.files, agentTlsUse(dialHost), this.pair, (pair) => gateway.setCertificate(pair), log, { accept: this.accepts, intervalMs });
    const file = this.files.caFile;
    return {
      start: () => {
        certificate.start();
        if (!file) return;
        watchFile(file, { interval: intervalMs, persistent: false }, () => {
          clearTimeout(this.caTimer);
          this.caTimer = setTimeout(() => void this.reloadCa(file, certificate.pair, (ca) => gateway.sendTrust(ca), log), 200);
          this.caTimer.unref();
        });
      },
      stop: () => {
        certificate.stop();
        clearTimeout(this.caTimer);
        if (file) unwatchFile(file);
      },
      get pair() {
        return certificate.pair;
      },
    };
  }

  private async reloadCa(file: string, served: TlsPair, onTrust: (ca: string) => void, log: (line: string) => void): Promise<void> {
    let next: string;
    try {
      next = readCa(file);
    } catch (err) {
      log(`agent channel: the changed CA file was not loaded, agents keep their trust: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    if (next === this.bundle) return;
    const problem = await handshakeProblem(served, next);
    if (problem) {
      log(`agent channel: the changed CA file does not trust the certificate served now (${problem}); agents keep their trust. Keep the CA that issued it in the file until the certificate is renewed from the new one.`);
      return;
    }
    this.bundle = next;
    onTrust(next);
    log(`agent channel: agents now trust the CA file's ${next.match(/BEGIN CERTIFICATE/g)?.length ?? 0} certificate(s); told every connected agent`);
  }
}

/** The agent channel's use: the certificate must cover the address agents dial (a name or an IP). */
export function agentTlsUse(dialHost: string | undefined): TlsUse {
  const any = dialHost === undefined || dialHost === '0.0.0.0' || dialHost === '::';
  return {
    owner: 'agent channel',
    flag: '--agent-tls',
    ...(any ? {} : { covers: { name: dialHost, what: `${dialHost}, the address agents dial`, hint: `Use a certificate whose names include ${dialHost}${isIP(dialHost) ? ' (an IP address SAN)' : ''}, or --agent-advertise a name it covers.` } }),
  };
}

/**
 * Reads and checks the files and the agents' trust. The address agents dial is often known only
 * once the driver is up (the local driver's bridge), so `coverDialHost` checks it then.
 */
export async function loadAgentTls(files: AgentTlsFiles, dialHost?: string): Promise<AgentTls> {
  const pair = loadTlsPair(files, agentTlsUse(dialHost));
  const ca = files.caFile ? readCa(files.caFile) : selfSigned(pair);
  const problem = await handshakeProblem(pair, ca);
  if (problem) {
    throw new BerthError(
      'validation_failed',
      `agents would not accept the agent channel's certificate (${pair.names}): ${problem}`,
      files.caFile ? `Give --agent-tls-ca the CA that issued ${files.certFile} (and put its intermediates after it in that file).` : 'Give --agent-tls-ca FILE: the CA that issued it (agents trust only it, or the public CAs without it).',
    );
  }
  return new AgentTls(files, pair, ca);
}

/** Throws, saying what to do, when the loaded certificate does not cover the address agents dial. */
export function coverDialHost(tls: AgentTls, dialHost: string): void {
  assertCovers(tls.pair, agentTlsUse(dialHost));
}

function readCa(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new BerthError('validation_failed', `the agent channel's CA file ${file} cannot be read: ${err instanceof Error ? err.message : String(err)}`, 'Give a readable PEM file (--agent-tls-ca).');
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new BerthError('validation_failed', `${file} holds no PEM certificate`, 'Give the CA certificate in PEM form: -----BEGIN CERTIFICATE-----.');
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (err) {
      throw new BerthError('validation_failed', `${file} holds a certificate that does not parse: ${err instanceof Error ? err.message : String(err)}`, 'Give the CA certificate in PEM form.');
    }
  }
  return `${blocks.join('\n')}\n`;
}

/** A self-signed certificate is its own CA; one issued by someone else is left to a CA file or the public roots. */
function selfSigned(pair: TlsPair): string | undefined {
  const leaf = new X509Certificate(pair.cert);
  return leaf.checkIssued(leaf) && leaf.verify(leaf.publicKey) ? leaf.toString() : undefined;
}

/**
 * Serves the pair on loopback for one handshake with the agents' trust (names are checked by
 * loadTlsPair, so only the chain is here): undefined when it succeeds, else the reason.
 */
async function handshakeProblem(pair: TlsPair, ca: string | undefined): Promise<string | undefined> {
  const server = createServer({ cert: pair.cert, key: pair.key }, (socket) => socket.end());
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  try {
    return await new Promise<string | undefined>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port, ca: ca ?? [...rootCertificates], checkServerIdentity: () => undefined, timeout: 5_000 });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve(undefined);
      });
      socket.once('error', (err: Error) => resolve(err.message));
      socket.once('timeout', () => {
        socket.destroy();
        resolve('the handshake timed out');
      });
    });
  } finally {
    server.close();
  }
}
