// Copies the files the server serves as they are (the dashboard's page, script and style) next to
// the compiled code, where it reads them from.
import { cpSync } from 'node:fs';

cpSync(new URL('../src/dashboard/public/', import.meta.url), new URL('../dist/dashboard/public/', import.meta.url), { recursive: true });
