// `npm pack` gives a tarball that installs into an empty project (offline:
// the package has no dependencies), imports, and type-checks with nothing
// else installed (no DOM or Node type definitions).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const PACKAGE = resolve(fileURLToPath(new URL('..', import.meta.url)));
const TSC = join(PACKAGE, 'node_modules/typescript/bin/tsc');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let dir;
let tarball;
let files;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pulsehub-client-pack-'));
  const { stdout } = await run(NPM, ['pack', '--json', '--pack-destination', dir], { cwd: PACKAGE, maxBuffer: 1 << 24 });
  const [info] = JSON.parse(stdout.slice(stdout.indexOf('[')));
  tarball = join(dir, info.filename);
  files = info.files.map((f) => f.path).sort();
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the tarball holds the sources, the types, the README and nothing else', () => {
  assert.ok(files.includes('src/pulsehub.js'));
  assert.ok(files.includes('types/pulsehub.d.ts'));
  assert.ok(files.includes('README.md'));
  assert.ok(files.includes('package.json'));
  const stray = files.filter((f) => !/^(src\/[\w.]+\.js|types\/[\w.]+\.d\.ts|README\.md|package\.json)$/.test(f));
  assert.deepEqual(stray, []);
});

test('installs into an empty project, imports, and type-checks', async () => {
  const app = join(dir, 'app');
  await run('mkdir', ['-p', app]);
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  await run(NPM, ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: app });

  // Runtime: the ES module loads in Node and works with any WebSocket constructor.
  await writeFile(
    join(app, 'main.mjs'),
    `import { PulseClient, PulseError } from '@pulsehub/client';
class FakeSocket { constructor(url) { this.url = url; this.readyState = 3; } close() {} }
const client = new PulseClient('ws://127.0.0.1:1/ws', { token: 't', WebSocket: FakeSocket });
const sub = client.subscribe('feed:demo', { onMessage: () => {} });
await client.close();
await sub.ready.catch((e) => { if (!(e instanceof PulseError) || e.code !== 'closed') throw e; });
console.log(typeof PulseClient, client.state);
`,
  );
  const { stdout } = await run(process.execPath, ['main.mjs'], { cwd: app });
  assert.equal(stdout.trim(), 'function closed');

  // Types: the example, strict, with only ES2022 (no DOM, no @types/node).
  await writeFile(
    join(app, 'consumer.ts'),
    `import { PulseClient, PulseError } from "@pulsehub/client";
import type { ConnectionState, EventFrame } from "@pulsehub/client";
declare const MyWebSocket: new (url: string) => unknown;
const token = "jwt";
const getToken = async (): Promise<string> => "new jwt";
const client = new PulseClient("ws://host:8080/ws", { token, getToken, WebSocket: MyWebSocket });
client.on("state", (state: ConnectionState) => {});
const sub = client.subscribe("feed:demo", { onMessage: (frame: EventFrame) => { const n: number = frame.offset; } });
export async function main(): Promise<void> {
  await sub.ready;
  sub.unsubscribe();
  await client.close();
  const e = new PulseError("timeout", "no reply");
  const code: string = e.code;
  const ref: number | undefined = e.ref;
}
`,
  );
  await writeFile(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022'], types: [], strict: true, noEmit: true, skipLibCheck: false },
      files: ['consumer.ts'],
    }),
  );
  await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app }).catch((e) => {
    throw new Error(`tsc failed:\n${e.stdout}${e.stderr}`);
  });
});
