// A real pulsehub for the end-to-end tests: the debug binary, on a free
// loopback port, over a fresh PostgreSQL database that the hub creates
// itself and that is dropped afterwards. Events and notifications go in
// over HTTP with the ingest key, exactly as a service would post them.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.PULSEHUB_BIN || join(ROOT, 'target/debug/pulsehub');
export const SIMULATE_BIN =
  process.env.PULSEHUB_SIMULATE_BIN || join(ROOT, 'target/debug/pulsehub-simulate');
export const JWT_SECRET = 'e2e-jwt-secret-0123456789';
export const INGEST_KEY = 'e2e-ingest-key-0123456789';

const serverUrl = () => {
  const url = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
  url.pathname = '';
  return url.toString().replace(/\/$/, '');
};

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function admin(fn) {
  const client = new pg.Client({ connectionString: `${serverUrl()}/postgres` });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Drops the databases of earlier test runs whose process is gone. */
async function dropStaleDatabases() {
  await admin(async (client) => {
    const { rows } = await client.query("SELECT datname FROM pg_database WHERE datname LIKE 'pulsehub\\_e2e\\_%'");
    for (const { datname } of rows) {
      const pid = Number(datname.split('_')[2]);
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

export class Hub {
  /** Starts a hub in demo mode (dev token endpoint on) with explicit secrets. */
  static async start(extraEnv = {}) {
    if (!existsSync(BIN)) {
      throw new Error(`${BIN} does not exist: build it first (cargo build, or scripts/test.sh)`);
    }
    const hub = new Hub();
    hub.port = await freePort();
    await dropStaleDatabases();
    hub.dbName = `pulsehub_e2e_${process.pid}_${randomBytes(4).toString('hex')}`;
    hub.databaseUrl = `${serverUrl()}/${hub.dbName}`;
    hub.extraEnv = extraEnv;
    hub.logs = [];
    await hub.spawn();
    return hub;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async spawn() {
    const env = {
      ...process.env,
      DATABASE_URL: this.databaseUrl,
      PULSEHUB_BIND: `127.0.0.1:${this.port}`,
      PULSEHUB_DEMO: 'true',
      PULSEHUB_JWT_SECRET: JWT_SECRET,
      PULSEHUB_INGEST_KEY: INGEST_KEY,
      PULSEHUB_WORKERS: '2',
      PULSEHUB_INSTANCE_ID: 'hub-e2e',
      PULSEHUB_PRESENCE_GRACE_MS: '500',
      PULSEHUB_STATS_DEBOUNCE_MS: '50',
      PULSEHUB_STATS_MAX_WAIT_MS: '200',
      PULSEHUB_STATS_TICK_MS: '1000',
      PULSEHUB_SHUTDOWN_SECS: '3',
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
      const gone = await Promise.race([this.exited, sleep(200).then(() => null)]);
      if (gone) throw new Error(`pulsehub exited (${JSON.stringify(gone)}) before it was ready:\n${this.logs.join('')}`);
      try {
        const res = await fetch(`${this.url}/ready`);
        if (res.status === 200) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`pulsehub not ready in 60 s:\n${this.logs.join('')}`);
    }
  }

  /** Stops the hub gracefully (SIGTERM: sessions are closed with 1001). */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    // A timer cleared once the hub is gone: a pending 15 s one would keep
    // the test process (and so the test file) alive after the last test.
    let timer;
    const done = await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(() => r(null), 15_000)))]);
    clearTimeout(timer);
    if (!done) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Starts it again on the same port and database. */
  async restart() {
    await this.stop();
    await this.spawn();
  }

  /** Stops the hub and drops its database. */
  async destroy() {
    await this.stop();
    await admin((client) => client.query(`DROP DATABASE IF EXISTS "${this.dbName}" WITH (FORCE)`));
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

  /** Posts events with the ingest key; resolves once the hub committed them. */
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

  /** A browser token from the demo endpoint. */
  async token(user, name, scopes = 'demo') {
    const q = new URLSearchParams({ user, name, scopes });
    const res = await this.request('GET', `/api/dev/token?${q}`);
    if (res.status !== 200) throw new Error(`dev token: ${res.status} ${res.text}`);
    return res.body.token;
  }

  async stats(scope, token) {
    const res = await this.request('GET', `/api/scopes/${scope}/stats`, { token });
    if (res.status !== 200) throw new Error(`stats: ${res.status} ${res.text}`);
    return res.body;
  }

  async history(channel, token, query = '') {
    const res = await this.request('GET', `/api/channels/${channel}/history${query}`, { token });
    if (res.status !== 200) throw new Error(`history: ${res.status} ${res.text}`);
    return res.body;
  }

  /** Runs `pulsehub-simulate` against this hub (realistic demo data). */
  async simulate(args) {
    if (!existsSync(SIMULATE_BIN)) {
      throw new Error(
        `${SIMULATE_BIN} does not exist: build it first (cargo build -p pulsehub-simulate, or scripts/test.sh)`,
      );
    }
    const proc = spawn(SIMULATE_BIN, ['--url', this.url, ...args], {
      env: { ...process.env, PULSEHUB_INGEST_KEY: INGEST_KEY, RUST_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (c) => (out += c));
    proc.stderr.on('data', (c) => (out += c));
    const code = await new Promise((r) => proc.once('exit', r));
    if (code !== 0) throw new Error(`simulate exited ${code}:\n${out}`);
  }
}

/** A check-in event of `actor` with a unique key. */
export function checkIn(scope, name, n) {
  return {
    scope,
    kind: 'check_in',
    actor: { id: name.toLowerCase(), name },
    subject: { type: 'ticket', id: `t-${name}-${n}`, state: 'used' },
    data: { gate: 'A', tier: 'standard' },
    key: `e2e-${name}-${n}-${randomBytes(4).toString('hex')}`,
  };
}

export function task(scope, name, id, state) {
  const kind = { pending: 'task.created', in_progress: 'task.started', completed: 'task.completed' }[state];
  return {
    scope,
    kind,
    actor: { id: name.toLowerCase(), name },
    subject: { type: 'task', id, state },
    data: { title: `Task ${id}` },
  };
}
