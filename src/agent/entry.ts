// Bundle entry: started directly as the host's agent process (`node /.berth/agent/berth-agent.cjs`).
import { runAgent } from './main.js';

runAgent();
