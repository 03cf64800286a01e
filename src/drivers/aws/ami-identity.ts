/**
 * The identity strip and check of an AMI bake, as POSIX sh scripts run on the builder (`$1` = the
 * root, empty on the machine itself; tests pass a directory): src/images/identity.ts applied to a
 * live Linux machine. The check fails on anything the strip should have removed.
 */
import { buildIdentityProbe } from '../../images/uniqueness.js';

const HISTORY = ['.bash_history', '.zsh_history', '.python_history', '.lesshst', '.viminfo'];
/** What the strip removes and the check fails on (shell words: `$R` is the root, globs unquoted). */
const REMOVED: [item: string, words: string][] = [
  ['dbus-machine-id', '"$R/var/lib/dbus/machine-id"'],
  ['hostname', '"$R/etc/hostname"'],
  ['ssh-host-keys', '"$R"/etc/ssh/ssh_host_*'],
  ['authorized-keys', '"$R/root/.ssh/authorized_keys" "$R"/home/*/.ssh/authorized_keys'],
  ['dhcp-leases', '"$R"/var/lib/dhcp/*.leases "$R"/var/lib/dhclient/* "$R"/var/lib/NetworkManager/*.lease "$R"/var/lib/dhcpcd/*.lease'],
  ['persistent-net', '"$R/etc/udev/rules.d/70-persistent-net.rules"'],
  ['random-seed', '"$R/var/lib/systemd/random-seed" "$R/var/lib/urandom/random-seed"'],
  ['berth-agent', '"$R/etc/berth/agent.json" "$R/etc/berth/tags.json"'],
  ['docker', '"$R/etc/docker/key.json" "$R/var/lib/docker/engine-id"'],
  ['shell-history', HISTORY.map((h) => `"$R/root/${h}" "$R"/home/*/${h}`).join(' ')],
];
/**
 * `$1` is the root (empty: this machine), so tests run the same text on a tree: `sh -c "$SCRIPT" sh
 * /tmp/root`. Links are removed, never followed, but a symlinked directory in such a tree is
 * entered: give it only trees made for the purpose.
 */
const PRELUDE = ['R="${1:-}"; R="${R%/}"; M="$R/run/berth-identity-stripped"', 'if [ -n "$R" ] && [ ! -d "$R" ]; then echo "$R is not a directory" >&2; exit 2; fi'];

/**
 * The identity strip for a real Linux AMI (POSIX sh, as root): what src/images/identity.ts strips
 * from a local bake, on a live machine. So: the journal is vacuumed and emptied, not removed with
 * its directory; /tmp, /run and /var/tmp/systemd-private-* stay (tmpfs or emptied at boot, and in
 * use by the runner's services); cloud-init's own `clean --logs` runs when installed.
 */
export const AMI_IDENTITY_STRIP_SCRIPT = [
  ...PRELUDE,
  'gone() { for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then rm -rf -- "$p"; fi; done; }',
  '# Emptied, not removed: an empty machine-id means "first boot" (machine-id(5)), and systemd writes a new one.',
  'if [ -f "$R/etc/machine-id" ] && [ ! -L "$R/etc/machine-id" ]; then : > "$R/etc/machine-id"; else gone "$R/etc/machine-id"; fi',
  ...REMOVED.map(([, words]) => `gone ${words}`),
  '# cloud-init: what `cloud-init clean` removes (all but the seed); the command itself works only on the live machine.',
  'if [ -z "$R" ] && command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs >/dev/null 2>&1 || :; fi',
  'for p in "$R"/var/lib/cloud/*; do [ "${p##*/}" = seed ] || gone "$p"; done',
  '# The mark the check compares log times with (in /run: never in a snapshot), set a second before logs are',
  '# emptied, so whatever services write from then on is newer than it even with coarse file times.',
  'mkdir -p "$R/run" && : > "$M" && sleep 1',
  '# The journal goes before logs are emptied: truncating a file journald has mapped would crash it.',
  'if [ -z "$R" ] && command -v journalctl >/dev/null 2>&1; then journalctl --rotate >/dev/null 2>&1 || :; journalctl --vacuum-time=1s >/dev/null 2>&1 || :; fi',
  'gone "$R"/var/log/journal/*',
  'if [ -d "$R/var/log" ]; then',
  `  find "$R/var/log" -path "$R/var/log/journal" -prune -o -type f \\( -name '*.gz' -o -name '*.xz' -o -name '*.old' -o -name '*.[0-9]' \\) -exec rm -f {} +`,
  `  find "$R/var/log" -path "$R/var/log/journal" -prune -o -type f -size +0 -exec sh -c 'for f; do : > "$f"; done' sh {} +`,
  'fi',
  'for p in "$R"/var/tmp/* "$R"/var/tmp/.[!.]*; do case "${p##*/}" in systemd-private-*) ;; *) gone "$p" ;; esac; done',
  'echo "berth-identity-strip: done"',
].join('\n');

/**
 * Fails (exit 1, a "remains" line per item) when anything the strip removes is there. Logs count
 * only with content older than the strip's mark: the builder's services (the runner's own agent
 * first) keep logging until the check, and that is not identity a step baked in.
 */
export const AMI_IDENTITY_CHECK_SCRIPT = [
  ...PRELUDE,
  'bad=0',
  'left() { echo "berth-identity-check: $1 remains: ${2#"$R"}"; bad=1; }',
  'any() { item=$1; shift; for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then left "$item" "$p"; fi; done; }',
  'if [ -s "$R/etc/machine-id" ]; then left machine-id "$R/etc/machine-id"; fi',
  ...REMOVED.map(([item, words]) => `any ${item} ${words}`),
  'for p in "$R"/var/lib/cloud/*; do [ "${p##*/}" = seed ] || any cloud-init "$p"; done',
  'stale() { if [ -f "$M" ]; then find "$@" ! -newer "$M"; else find "$@"; fi; }',
  'logs=$(stale "$R/var/log" -type f -size +0 2>/dev/null | head -n 20)',
  'if [ -n "$logs" ]; then printf \'%s\\n\' "$logs" | while IFS= read -r p; do echo "berth-identity-check: logs remain: ${p#"$R"}"; done; bad=1; fi',
  'if [ "$bad" = 0 ]; then echo "berth-identity-check: ok"; fi',
  'exit "$bad"',
].join('\n');

/**
 * The clone-uniqueness probe (src/images/uniqueness.ts) for an instance of a baked AMI: the same
 * items, read under `$1` (empty on the instance itself), so the same text runs on an emulated
 * machine whose root is a directory. Only reads; the hostname is the running system's.
 */
export const AMI_IDENTITY_PROBE: string[] = ['R="${1:-}"; R="${R%/}"', ...buildIdentityProbe({ shellWord: '"$R"' })];
