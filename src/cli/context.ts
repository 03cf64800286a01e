import { ApiClient, resolveClientConfig } from './client.js';
import { consolePrinter, type Printer } from './output.js';

/** What every CLI command receives: how to reach the server and how to print. */
export interface Context {
  dataDir: () => string;
  client: () => ApiClient;
  printer: (json: boolean | undefined) => Printer;
  /** Set by an action whose outcome is a failure without being an error (e.g. a command that failed). */
  exitCode: number;
}

export function createContext(env: NodeJS.ProcessEnv, dataDir: () => string): Context {
  let client: ApiClient | undefined;
  return {
    dataDir,
    client: () => (client ??= new ApiClient(resolveClientConfig({ url: env['BERTH_URL'], token: env['BERTH_TOKEN'], dataDir: dataDir(), caFile: env['BERTH_CA_FILE'] }))),
    printer: (json) => consolePrinter(Boolean(json)),
    exitCode: 0,
  };
}
