/** Certificates for HTTPS tests, made by the machine's openssl (CI installs it): self-signed, or issued by a test CA. */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface TestCertificate {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function subjectAltName(names: string[]): string {
  return `subjectAltName=${names.map((n) => (/^[\d.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',')}`;
}

/**
 * A P-256 key and a certificate for `names` (`*.envs.test`; an IPv4 address as such) valid for two
 * days, as DIR/BASE.{crt,key}: self-signed, or issued by `issuer` (see makeCa).
 */
export function makeCertificate(dir: string, base: string, names: string[], issuer?: TestCertificate): TestCertificate {
  const certFile = join(dir, `${base}.crt`);
  const keyFile = join(dir, `${base}.key`);
  const subject = ['-subj', `/CN=${names[0] ?? 'berth-test'}`, '-addext', subjectAltName(names)];
  if (!issuer) {
    execFileSync('openssl', ['req', '-x509', ...P256, '-keyout', keyFile, '-out', certFile, '-days', '2', ...subject], { stdio: 'ignore' });
  } else {
    const csr = join(dir, `${base}.csr`);
    execFileSync('openssl', ['req', '-new', ...P256, '-keyout', keyFile, '-out', csr, ...subject], { stdio: 'ignore' });
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', issuer.certFile, '-CAkey', issuer.keyFile, '-CAcreateserial', '-days', '2', '-copy_extensions', 'copyall', '-out', certFile], { stdio: 'ignore' });
    rmSync(csr);
  }
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}

/** A CA (a self-signed certificate that may issue others) as DIR/BASE.{crt,key}. */
export function makeCa(dir: string, base: string): TestCertificate {
  const certFile = join(dir, `${base}.crt`);
  const keyFile = join(dir, `${base}.key`);
  execFileSync('openssl', [
    'req', '-x509', ...P256, '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${base} test CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ], { stdio: 'ignore' });
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}
