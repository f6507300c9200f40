// The example in a real browser: the app built by Vite, served from an
// origin of its own (the hub lists it in PULSEHUB_ALLOWED_ORIGINS), opened
// in Debian's chromium (playwright-core) against a real hub in demo mode
// (the page takes its token from /api/dev/token). Seed 001's messages go in
// over HTTP, as the mapping makes them, and as they are through a Redis
// stream consumed with examples/mappings/live-dashboard.toml; the five
// counters and the check-in feed follow without a reload.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect as tcp } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { Hub, freePort, until } from '../../../clients/js/tests/lib/hub.mjs';

const APP = resolve(fileURLToPath(new URL('..', import.meta.url)));
const MAPPING = resolve(APP, '../mappings/live-dashboard.toml');
const SEED_TOPIC = 'platform.analytics.check-in.v1';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const REDIS = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const EVENT = `evt_${randomBytes(6).toString('hex')}`;
const KINDS = ['message.sent', 'poll.vote', 'question.asked', 'question.upvoted', 'reaction'];

let dir;
let site;
let hub;
let browser;
let stream;

/** The built app, served as files (index.html for any other path). */
async function serve(root, port) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = join(root, path === '/' || !extname(path) ? 'index.html' : path);
    try {
      const body = await readFile(file.startsWith(root) ? file : join(root, 'index.html'));
      res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return server;
}

/** One Redis command (RESP) on its own connection: enough for XADD and DEL. */
function redis(...args) {
  return new Promise((resolveReply, reject) => {
    const socket = tcp(Number(REDIS.port || 6379), REDIS.hostname);
    let reply = '';
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      reply += chunk;
      const complete = reply[0] === '$' ? reply.split('\r\n').length >= 3 : reply.includes('\r\n');
      if (!complete) return;
      socket.end();
      if (reply[0] === '-') reject(new Error(`redis ${args[0]}: ${reply.trim()}`));
      else resolveReply(reply);
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

// Seed 001's messages, as its services publish them.
const checkIn = (id, name) => ({ type: 'CHECK_IN_PROCESSED', eventId: EVENT, organizationId: 'org_abc123', checkInData: { id, name } });
const counter = (type) => ({ type, eventId: EVENT, organizationId: 'org_abc123' });

/** What examples/mappings/live-dashboard.toml makes of a message, for POST /api/events. */
function asEvent(message) {
  const renamed = { CHECK_IN_PROCESSED: 'check_in', POLL_VOTE_CAST: 'poll.vote', REACTION_SENT: 'reaction' };
  const event = {
    scope: message.eventId,
    kind: renamed[message.type] ?? message.type.toLowerCase().replaceAll('_', '.'),
    data: { organization: message.organizationId },
    key: `http-${randomBytes(8).toString('hex')}`,
  };
  if (message.checkInData) event.actor = { id: message.checkInData.id, name: message.checkInData.name };
  return event;
}

const times = (n, message) => Array.from({ length: n }, () => message);

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium (scripts/test.sh does)`);
  dir = await mkdtemp(join(tmpdir(), 'pulsehub-react-example-'));
  // The app as it ships: `vite build`.
  await promisify(execFile)(process.execPath, [join(APP, 'node_modules/vite/bin/vite.js'), 'build', '--outDir', join(dir, 'dist'), '--emptyOutDir'], { cwd: APP });
  const port = await freePort();
  site = await serve(join(dir, 'dist'), port);
  const origin = `http://127.0.0.1:${port}`;

  // A stream of this run, consumed with the example mapping (its rule renamed to it).
  stream = `pulsehub-react-example-${process.pid}:${SEED_TOPIC}`;
  const mapping = join(dir, 'mapping.toml');
  await writeFile(mapping, (await readFile(MAPPING, 'utf8')).replaceAll(SEED_TOPIC, stream));
  hub = await Hub.start({
    PULSEHUB_DEMO: 'true',
    PULSEHUB_ALLOWED_ORIGINS: origin, // the app's origin only: /ws and the API refuse others
    PULSEHUB_REDIS_STREAMS: stream,
    PULSEHUB_REDIS_STREAMS_URL: REDIS.href,
    PULSEHUB_MAPPING_FILE: mapping,
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  site.origin = origin;
});

after(async () => {
  await browser?.close();
  await hub?.destroy();
  await new Promise((r) => (site ? site.close(r) : r()));
  if (stream) await redis('DEL', stream, `${stream}.dlq`).catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** What the page shows: the counters by kind, the feed's lines, the connection. */
const shown = (page) =>
  page.evaluate((kinds) => {
    const counters = {};
    for (const kind of kinds) counters[kind] = document.querySelector(`output[data-kind="${kind}"]`)?.textContent ?? null;
    const feed = [...document.querySelectorAll('.feed li')].map((li) => li.textContent.replace('✓', '').trim());
    const empty = document.body.textContent.includes('No check-ins yet.');
    return { counters, feed, empty, connection: document.querySelector('[role="status"]')?.dataset.state ?? null };
  }, KINDS);

const counters = (values) => Object.fromEntries(KINDS.map((k, i) => [k, String(values[i])]));

test('the counters and the check-in feed update live, from HTTP and from the bus', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  try {
    await page.goto(`${site.origin}/?hub=${encodeURIComponent(hub.url)}&event=${EVENT}`);
    let last;
    const expect = async (want, what) => {
      try {
        await until(async () => {
          last = await shown(page);
          return JSON.stringify({ ...last, empty: undefined }) === JSON.stringify({ ...want, empty: undefined }) && last.empty === want.empty;
        }, { timeoutMs: 15_000, what });
      } catch (e) {
        throw new Error(`${e.message}\npage: ${JSON.stringify(last)}\nerrors: ${errors.join('\n')}\nhub:\n${hub.logs.join('').slice(-3000)}`);
      }
    };
    await expect({ counters: counters([0, 0, 0, 0, 0]), feed: [], empty: true, connection: 'connected' }, 'the empty dashboard, live');

    // Over HTTP, as the mapping makes them.
    const first = [
      checkIn('user_1', 'John Doe'),
      ...times(3, counter('MESSAGE_SENT')),
      ...times(2, counter('POLL_VOTE_CAST')),
      counter('QUESTION_ASKED'),
      ...times(4, counter('QUESTION_UPVOTED')),
      ...times(5, counter('REACTION_SENT')),
      checkIn('user_2', 'Maria Garcia'),
    ];
    await hub.postEvents(first.map(asEvent));
    await expect(
      { counters: counters([3, 2, 1, 4, 5]), feed: ['Maria Garcia has checked in.', 'John Doe has checked in.'], empty: false, connection: 'connected' },
      'the events posted over HTTP',
    );

    // Through the bus, as the services publish them.
    for (const message of [counter('MESSAGE_SENT'), checkIn('user_3', 'Alex Johnson'), counter('REACTION_SENT'), counter('QUESTION_ASKED')]) {
      await redis('XADD', stream, '*', 'data', JSON.stringify(message));
    }
    await expect(
      {
        counters: counters([4, 2, 2, 4, 6]),
        feed: ['Alex Johnson has checked in.', 'Maria Garcia has checked in.', 'John Doe has checked in.'],
        empty: false,
        connection: 'connected',
      },
      'the messages consumed from the stream',
    );
    assert.deepEqual(errors, []);
    if (process.env.PULSEHUB_SCREENSHOTS) await page.screenshot({ path: join(process.env.PULSEHUB_SCREENSHOTS, 'react-live-dashboard.png') });
  } finally {
    await context.close();
  }
});

test('a page on an origin the hub does not list is refused', async () => {
  // The same build from another origin: the hub's Origin check (403) keeps it out.
  const port = await freePort();
  const other = await serve(join(dir, 'dist'), port);
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`http://127.0.0.1:${port}/?hub=${encodeURIComponent(hub.url)}&event=${EVENT}`);
    await until(async () => (await shown(page)).connection === 'closed', { timeoutMs: 15_000, what: 'the client gives up' });
    assert.match(await page.textContent('[role="status"]'), /Disconnected/);
    assert.equal((await shown(page)).counters['message.sent'], null, 'no counters shown');
  } finally {
    await context.close();
    await new Promise((r) => other.close(r));
  }
});
