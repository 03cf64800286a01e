// The loader bundle's entry (berth-agent.cjs): see loader.ts.
import { runLoader } from './loader.js';

runLoader(process.argv);
