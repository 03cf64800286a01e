/**
 * The agent channel over TLS (`--agent-tls-cert/--agent-tls-key [--agent-tls-ca]`): agents dial
 * `wss://`, fleet machines enrol and hosts fetch slugs over `https://` on the same port, so a
 * host's token, a pool's enrolment secret and everything sent to a host cross the network
 * encrypted and only to this server.
 *
 * Agents trust what they were given at launch (AgentBootstrap's `ca`, in the host's identity or a
 * fleet's boot script): the CA file when there is one, the certificate itself when it is
 * self-signed, else nothing (the system's roots, for a public CA). Whether they will accept the
 * certificate is checked the way they check it — a TLS handshake against it with exactly that
 * trust — before the server starts, and again for each renewal: a renewed certificate the running
 * agents would refuse would cut every host off, so it is not served (the last good one keeps serving).
 */
import { connect, createServer, rootCertificates } from 'node:tls';
import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { BerthError } from '../core/errors.js';
import { loadTlsPair, type TlsFiles, type TlsPair, type TlsUse } from './tls-files.js';

export interface AgentTlsFiles extends TlsFiles {
  /** The CA (PEM, one or more certificates) agents are told to trust; needed for a private CA. */
  caFile?: string;
}

export interface AgentTls {
  pair: TlsPair;
  /** What agents trust (PEM); undefined: the system's roots. */
  ca: string | undefined;
  /** The check a renewal must pass too (see CertificateWatcher's accept): undefined, or what is wrong. */
  accepts: (pair: TlsPair) => Promise<string | undefined>;
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
  const accepts = (next: TlsPair): Promise<string | undefined> => handshakeProblem(next, ca);
  const problem = await accepts(pair);
  if (problem) {
    throw new BerthError(
      'validation_failed',
      `agents would not accept the agent channel's certificate (${pair.names}): ${problem}`,
      files.caFile ? `Give --agent-tls-ca the CA that issued ${files.certFile} (and put its intermediates after it in that file).` : 'Give --agent-tls-ca FILE: the CA that issued it (agents trust only it, or the public CAs without it).',
    );
  }
  return { pair, ca, accepts };
}

/** Throws what loadTlsPair would for a certificate that does not cover the address agents dial. */
export function coverDialHost(files: TlsFiles, dialHost: string): void {
  loadTlsPair(files, agentTlsUse(dialHost));
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
