// `npm pack` of @pulsehub/react (and of @pulsehub/client, its peer) gives
// tarballs that install into an empty project next to React, import,
// render on a server (no client yet: initial values, no connection), and
// type-check a strict TypeScript consumer.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const PACKAGE = resolve(fileURLToPath(new URL('..', import.meta.url)));
const CLIENT = resolve(PACKAGE, '../js');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let dir;
const tarballs = {};
const files = {};
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pulsehub-react-pack-'));
  for (const [name, cwd] of [['client', CLIENT], ['react', PACKAGE]]) {
    const { stdout } = await run(NPM, ['pack', '--json', '--pack-destination', dir], { cwd, maxBuffer: 1 << 24 });
    const [info] = JSON.parse(stdout.slice(stdout.indexOf('[')));
    tarballs[name] = join(dir, info.filename);
    files[name] = info.files.map((f) => f.path).sort();
  }
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the tarball holds the sources, the types, the README and nothing else', () => {
  for (const f of ['src/index.js', 'types/index.d.ts', 'README.md', 'package.json']) assert.ok(files.react.includes(f), f);
  const stray = files.react.filter((f) => !/^(src\/[\w.]+\.js|types\/[\w.]+\.d\.ts|README\.md|package\.json)$/.test(f));
  assert.deepEqual(stray, []);
});

test('installs into an empty project with React, renders on the server, and type-checks', async () => {
  const app = join(dir, 'app');
  await mkdir(app);
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  // React and TypeScript come from the registry (or npm's cache); the pulsehub packages from the tarballs.
  await run(
    NPM,
    ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarballs.client, tarballs.react, 'react@19', 'react-dom@19', '@types/react@19', 'typescript@~5.9.3'],
    { cwd: app, maxBuffer: 1 << 24 },
  );
  // Installing something else afterwards still works (no dangling links in the tree).
  await run(NPM, ['ls', '--all'], { cwd: app, maxBuffer: 1 << 24 });

  await writeFile(
    join(app, 'main.mjs'),
    `import { createElement as h } from 'react';
import { renderToString } from 'react-dom/server';
import { PulseProvider, useConnectionState, useStats, useFeed } from '@pulsehub/react';
function Board() {
  const state = useConnectionState();
  const { counts } = useStats('demo');
  const { events } = useFeed('demo');
  return h('p', null, state + ' ' + (counts['message.sent'] ?? 0) + ' ' + events.length);
}
// A provider that owns its client creates it in an effect: never on the server.
console.log(renderToString(h(PulseProvider, { url: 'ws://127.0.0.1:1/ws', options: { token: 't' } }, h(Board))));
`,
  );
  const { stdout } = await run(process.execPath, ['main.mjs'], { cwd: app });
  assert.equal(stdout.trim(), '<p>connecting 0 0</p>');

  await writeFile(
    join(app, 'consumer.ts'),
    `import { createElement, type ReactElement } from "react";
import { PulseClient } from "@pulsehub/client";
import type { ConnectionState, EventFrame, PresenceUser } from "@pulsehub/client";
import { PulseProvider, useChannel, useConnectionState, useConnectionStatus, useFeed, useNotifications, usePresence, usePulseClient, useStats } from "@pulsehub/react";
import type { StatsState } from "@pulsehub/react";
declare const MyWebSocket: new (url: string) => unknown;
const client = new PulseClient("ws://host/ws", { token: "jwt", WebSocket: MyWebSocket });
function Board({ scope }: { scope: string }): ReactElement {
  const state: ConnectionState = useConnectionState();
  const rtt: number | null = useConnectionStatus().rtt;
  const stats: StatsState = useStats(scope);
  const messages: number = stats.counts["message.sent"] ?? 0;
  const { events } = useFeed(scope, { limit: 10 });
  const offset: number | undefined = events[0]?.offset;
  const members: PresenceUser[] = usePresence(scope).members;
  const { unread, markRead, dismiss } = useNotifications();
  const mine = useNotifications("alice");
  const own: PulseClient | null = usePulseClient();
  const { ready } = useChannel(\`feed:\${scope}\`, (frame: EventFrame) => { const o: number = frame.offset; });
  markRead("n1"); dismiss("n2"); mine.markAllRead();
  return createElement("p", null, \`\${state} \${rtt} \${messages} \${offset} \${members.length} \${unread} \${ready} \${own?.state}\`);
}
export const given = createElement(PulseProvider, { client }, createElement(Board, { scope: "demo" }));
export const owned = createElement(PulseProvider, { url: "wss://hub.example.com/ws", options: { getToken: async () => "jwt" } });
`,
  );
  await writeFile(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'DOM'], types: [], strict: true, noEmit: true, skipLibCheck: false },
      files: ['consumer.ts'],
    }),
  );
  await run(process.execPath, [join(app, 'node_modules/typescript/bin/tsc'), '-p', app], { cwd: app }).catch((e) => {
    throw new Error(`tsc: ${e.stdout}${e.stderr}`);
  });
});
