// A real pulsehub for the client tests (the approach of tests/e2e/lib/hub.mjs):
// the binary from PULSEHUB_BIN (default ../../target/debug/pulsehub from
// clients/js), on a free loopback port, over a fresh PostgreSQL database that
// the hub creates itself and that is dropped afterwards. Tokens are minted
// here (HS256 with the hub's secret); events and notifications go in over
// HTTP with the ingest key, as a service would post them.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = resolve(PACKAGE, process.env.PULSEHUB_BIN || '../../target/debug/pulsehub');
export const JWT_SECRET = 'sdk-test-jwt-secret-0123456789';
export const INGEST_KEY = 'sdk-test-ingest-key-0123456789';
const DB_PREFIX = 'pulsehub_sdk_';

const serverUrl = () => {
  const url = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
  url.pathname = '';
  return url.toString().replace(/\/$/, '');
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Runs `fn` with a client of the database `name`. */
export async function withDb(name, fn) {
  const client = new pg.Client({ connectionString: `${serverUrl()}/${name}` });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Drops the databases of earlier runs whose process is gone. */
async function dropStaleDatabases() {
  await withDb('postgres', async (client) => {
    const { rows } = await client.query(`SELECT datname FROM pg_database WHERE datname LIKE '${DB_PREFIX.replace(/_/g, '\\_')}%'`);
    for (const { datname } of rows) {
      const pid = Number(datname.slice(DB_PREFIX.length).split('_')[0]);
      let alive = false;
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (e) {
        alive = e.code === 'EPERM';
      }
      if (!Number.isInteger(pid) || !alive) await client.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    }
  });
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT for the test hub. */
export function mintToken({ sub = 'alice', name, scopes = ['demo'], ttlS = 3600, exp, secret = JWT_SECRET } = {}) {
  const claims = { sub, scopes, exp: exp ?? Math.floor(Date.now() / 1000) + ttlS };
  if (name !== undefined) claims.name = name;
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  const sig = createHmac('sha256', secret).update(head).digest('base64url');
  return `${head}.${sig}`;
}

export class Hub {
  static async start(extraEnv = {}) {
    if (!existsSync(BIN)) throw new Error(`${BIN} does not exist: build it (cargo build) or set PULSEHUB_BIN`);
    const hub = new Hub();
    hub.port = await freePort();
    await dropStaleDatabases();
    hub.newDatabase();
    hub.extraEnv = extraEnv;
    hub.logs = [];
    await hub.spawn();
    return hub;
  }

  newDatabase() {
    this.dbName = `${DB_PREFIX}${process.pid}_${randomBytes(4).toString('hex')}`;
    this.databases = [...(this.databases || []), this.dbName];
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async spawn() {
    const env = {
      ...process.env,
      DATABASE_URL: `${serverUrl()}/${this.dbName}`,
      PULSEHUB_BIND: `127.0.0.1:${this.port}`,
      PULSEHUB_JWT_SECRET: JWT_SECRET,
      PULSEHUB_INGEST_KEY: INGEST_KEY,
      PULSEHUB_WORKERS: '2',
      PULSEHUB_INSTANCE_ID: 'hub-sdk',
      PULSEHUB_PRESENCE_GRACE_MS: '300',
      PULSEHUB_STATS_DEBOUNCE_MS: '50',
      PULSEHUB_STATS_MAX_WAIT_MS: '200',
      PULSEHUB_STATS_TICK_MS: '1000',
      PULSEHUB_SHUTDOWN_SECS: '2',
      PULSEHUB_LOG_FORMAT: 'pretty',
      RUST_LOG: process.env.RUST_LOG || 'warn',
      ...this.extraEnv,
    };
    this.proc = spawn(BIN, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 200) this.logs.shift();
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((r) => this.proc.once('exit', (code, signal) => r({ code, signal })));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const gone = await Promise.race([this.exited, sleep(100).then(() => null)]);
      if (gone) throw new Error(`pulsehub exited (${JSON.stringify(gone)}) before it was ready:\n${this.logs.join('')}`);
      try {
        const res = await fetch(`${this.url}/ready`);
        await res.text();
        if (res.status === 200) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`pulsehub not ready in 60 s:\n${this.logs.join('')}`);
    }
  }

  /** SIGTERM: sessions are closed with 1001. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    // (A timer that is cleared: a pending 15 s sleep would hold the test process.)
    let timer;
    const done = await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(() => r(null), 15_000)))]);
    clearTimeout(timer);
    if (!done) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Stops it and starts it again on the same port (and database, unless `fresh`). */
  async restart({ fresh = false } = {}) {
    await this.stop();
    if (fresh) this.newDatabase();
    await this.spawn();
  }

  async destroy() {
    await this.stop();
    await withDb('postgres', async (client) => {
      for (const name of this.databases) await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    });
  }

  /** SQL on the hub's current database (e.g. to prune history). */
  sql(query, params) {
    return withDb(this.dbName, (client) => client.query(query, params));
  }

  async request(method, path, { body, token } = {}) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`${this.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: res.status, body: json, text };
  }

  async postEvents(events) {
    const res = await this.request('POST', '/api/events', { body: events, token: INGEST_KEY });
    if (res.status !== 202) throw new Error(`POST /api/events: ${res.status} ${res.text}`);
    return res.body;
  }

  async notify(notification) {
    const res = await this.request('POST', '/api/notifications', { body: notification, token: INGEST_KEY });
    if (res.status !== 202) throw new Error(`POST /api/notifications: ${res.status} ${res.text}`);
    return res.body;
  }
}

let serial = 0;
/** A check-in event with a unique key. */
export function checkIn(scope, actor = 'Maria', n = ++serial) {
  return {
    scope,
    kind: 'check_in',
    actor: { id: actor.toLowerCase(), name: actor },
    subject: { type: 'ticket', id: `t-${actor}-${n}`, state: 'used' },
    data: { n },
    key: `sdk-${actor}-${n}-${randomBytes(4).toString('hex')}`,
  };
}

/** Resolves when `predicate()` is truthy; polls every 20 ms. */
export async function until(predicate, { timeoutMs = 10_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
