// A tiny SVG sparkline (line + soft area), drawn by hand: one path, no library.
// Samples of `events_last_minute` are kept per scope in localStorage so the
// line survives a reload; it covers the last 15 minutes.

import { store, svg } from './util.js';

const WINDOW_MS = 15 * 60 * 1000;
const SAMPLE_EVERY_MS = 10 * 1000;

export class Samples {
  constructor(scope) {
    this.key = `pulsehub.spark.${scope}`;
    const kept = store.get(this.key, []);
    this.points = Array.isArray(kept) ? kept.filter((p) => Array.isArray(p) && p.length === 2) : [];
    this.trim(Date.now());
  }

  trim(now) {
    this.points = this.points.filter(([t]) => now - t <= WINDOW_MS && t <= now + 1000);
  }

  /**
   * Rebuilds the curve from feed items (`at` timestamps, any order) where no
   * sample exists: each point counts the events of the minute before it.
   * Only the stretch the items fully cover is drawn (`complete`: the items
   * are all the history there is).
   */
  seed(times, complete, now = Date.now()) {
    const ts = times.map((t) => Date.parse(t)).filter((t) => !Number.isNaN(t)).sort((a, b) => a - b);
    const from = complete ? now - WINDOW_MS : (ts[0] ?? now) + 60_000;
    const have = (t) => this.points.some(([p]) => Math.abs(p - t) < SAMPLE_EVERY_MS / 2);
    const seeded = [];
    for (let t = now - Math.floor((now - from) / SAMPLE_EVERY_MS) * SAMPLE_EVERY_MS; t <= now; t += SAMPLE_EVERY_MS) {
      if (t < now - WINDOW_MS || have(t)) continue;
      seeded.push([t, ts.filter((x) => x > t - 60_000 && x <= t).length]);
    }
    this.points = [...this.points, ...seeded].sort((a, b) => a[0] - b[0]);
    this.trim(now);
    store.set(this.key, this.points);
  }

  /** Records a value; at most one point per 10 s (the latest wins). */
  add(value, now = Date.now()) {
    if (typeof value !== 'number') return;
    const last = this.points[this.points.length - 1];
    if (last && now - last[0] < SAMPLE_EVERY_MS) last[1] = value;
    else this.points.push([now, value]);
    this.trim(now);
    store.set(this.key, this.points);
  }
}

/** Draws `points` ([t, v] pairs) into `host` as an accessible SVG. */
export function drawSparkline(host, points, { label = '' } = {}) {
  const w = 240;
  const h = 48;
  const pad = 3;
  const now = Date.now();
  const t0 = now - WINDOW_MS;
  const max = Math.max(1, ...points.map(([, v]) => v));
  const x = (t) => pad + ((t - t0) / WINDOW_MS) * (w - 2 * pad);
  const y = (v) => h - pad - (v / max) * (h - 2 * pad);
  const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label, class: 'spark' });
  if (points.length > 0) {
    const line = points.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    const first = x(points[0][0]).toFixed(1);
    const last = x(points[points.length - 1][0]).toFixed(1);
    root.append(
      svg('path', { d: `${line} L${last},${h - pad} L${first},${h - pad} Z`, class: 'spark-area' }),
      svg('path', { d: line, class: 'spark-line', 'vector-effect': 'non-scaling-stroke' }),
    );
  }
  host.replaceChildren(root);
}
