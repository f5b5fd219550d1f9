// The Medplum test peer for the scripts here (verify.mjs, bench.mjs): the server at BASE_URL when
// given, else `./run 0` started on a free port and stopped by stop().

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

export async function startPeer() {
  const given = process.env.BASE_URL?.replace(/\/$/, '');
  if (given) {
    return { base: given, stop: async () => {} };
  }
  const child = spawn(`${here}run`, ['0'], { env: { ...process.env, MEDPLUM_PEER_QUIET: '1' }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /127\.0\.0\.1:(\d+)\/fhir/.exec(out);
      if (m) {
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  const stop = async () => {
    child.kill('SIGTERM');
    await once(child, 'exit');
  };
  return { base: `http://127.0.0.1:${port}/fhir`, stop };
}
