// Bundle entry: started directly as the host's agent process.
import { runAgent } from './main.js';

runAgent();
