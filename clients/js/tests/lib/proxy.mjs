// A TCP-level stand-in for a proxy in front of the hub, to make WebSocket fail
// while HTTP works (a corporate proxy that refuses upgrades), or make
// everything fail (the hub unreachable):
//   mode "pass"       → HTTP and WebSocket upgrades are forwarded
//   mode "no-upgrade" → HTTP is forwarded, upgrades get 403
//   mode "down"       → every connection is reset
// `cut()` drops every open connection (the hub never sees a close frame);
// `stalled = true` drops what WebSocket clients send (a link that died).

import http from 'node:http';
import net from 'node:net';

export class Proxy {
  /** @param {number} targetPort */
  static async start(targetPort, mode = 'pass') {
    const proxy = new this(targetPort, mode);
    await new Promise((r) => proxy.server.listen(0, '127.0.0.1', r));
    proxy.port = proxy.server.address().port;
    return proxy;
  }

  constructor(targetPort, mode) {
    this.target = targetPort;
    this.mode = mode;
    this.sockets = new Set();
    this.upgrades = 0;
    this.stalled = false;
    this.requests = [];
    this.server = http.createServer((req, res) => this.forward(req, res));
    this.server.keepAliveTimeout = 1000;
    this.server.on('connection', (socket) => {
      if (this.mode === 'down') {
        socket.destroy();
        return;
      }
      this.track(socket);
    });
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  track(socket) {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
  }

  forward(req, res) {
    this.requests.push(req.url);
    const upstream = http.request(
      { host: '127.0.0.1', port: this.target, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  }

  upgrade(req, socket, head) {
    this.track(socket);
    if (this.mode !== 'pass') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 21\r\nconnection: close\r\n\r\nupgrades not allowed\n');
      return;
    }
    this.upgrades += 1;
    const upstream = net.connect(this.target, '127.0.0.1', () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      // Not `pipe`: while `stalled`, what the client sends is dropped.
      socket.on('data', (data) => {
        if (!this.stalled) upstream.write(data);
      });
    });
    this.track(upstream);
    upstream.on('close', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
  }

  /** Drops every open connection. */
  cut() {
    for (const socket of this.sockets) socket.destroy();
  }

  async close() {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}
