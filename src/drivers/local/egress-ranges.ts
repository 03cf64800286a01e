/** Private (RFC 1918), shared (RFC 6598), link-local and multicast ranges: closed to hosts' egress unless configured otherwise (egress.ts). */
export const DEFAULT_EGRESS_DENY = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '224.0.0.0/4'];
