/**
 * The host's tags file (/etc/berth/tags.json): what a claim gave the host, for its programs to read,
 * and BERTH_TAGS of every command. Rewritten whole through a rename, so a reader never sees half.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

export class HostTagsFile {
  /** The tags as JSON; read from the file on first use (a restarted agent keeps the host's). */
  private cached: string | undefined;

  constructor(
    private readonly path: string,
    private readonly log: (line: string) => void,
  ) {}

  /** New tags (a claim): later commands see them. */
  set(tags: Record<string, string>): void {
    this.cached = JSON.stringify(tags);
    try {
      writeFileSync(`${this.path}.berth-tmp`, `${this.cached}\n`, { mode: 0o644 });
      renameSync(`${this.path}.berth-tmp`, this.path);
    } catch (err) {
      this.log(`tags: cannot write ${this.path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** The tags as JSON ('{}' when the host has none). */
  json(): string {
    if (this.cached === undefined) {
      try {
        this.cached = JSON.stringify(JSON.parse(readFileSync(this.path, 'utf8')) as unknown);
      } catch {
        this.cached = '{}';
      }
    }
    return this.cached;
  }
}
