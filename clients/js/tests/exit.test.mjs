// `close()` leaves nothing behind: a Node process that used a client ends by
// itself, in each transport state.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Hub, freePort, mintToken } from './lib/hub.mjs';
import { Proxy } from './lib/proxy.mjs';

const CHILD = fileURLToPath(new URL('./fixtures/child.mjs', import.meta.url));
const EXIT_WITHIN_MS = 3000;

let hub;
before(async () => {
  hub = await Hub.start();
});
after(async () => {
  await hub?.destroy();
});

/** Runs the child; resolves with its output once it exited by itself. */
function runChild(url, mode) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, url, mintToken({ sub: 'alice', scopes: ['demo'] }), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let closedAt = null;
    let killer = null;
    const overall = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child (${mode}) did not finish in 20 s:\n${out}`));
    }, 20_000);
    const onData = (chunk) => {
      out += chunk;
      if (closedAt === null && out.includes('closed ')) {
        closedAt = Date.now();
        killer = setTimeout(() => {
          child.kill('SIGKILL');
        }, EXIT_WITHIN_MS);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(overall);
      clearTimeout(killer);
      if (signal === 'SIGKILL' && closedAt !== null) {
        reject(new Error(`child (${mode}) still running ${EXIT_WITHIN_MS} ms after close():\n${out}`));
        return;
      }
      resolve({ code, signal, out, lingerMs: closedAt === null ? null : Date.now() - closedAt });
    });
  });
}

test('connected over WebSocket: the process exits by itself after close()', async () => {
  const r = await runChild(hub.wsUrl, 'ws');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /closed state=closed timers=0 ping=(\d+|closed)/);
});

test('polling (a long-poll in flight): the process exits by itself after close()', async () => {
  const proxy = await Proxy.start(hub.port, 'no-upgrade');
  try {
    const r = await runChild(proxy.wsUrl, 'poll');
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /closed state=closed timers=0 ping=closed/);
  } finally {
    await proxy.close();
  }
});

test('reconnecting (nothing listening): the process exits by itself after close()', async () => {
  const port = await freePort();
  const r = await runChild(`ws://127.0.0.1:${port}/ws`, 'reconnecting');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /closed state=closed timers=0 ping=closed/);
});
