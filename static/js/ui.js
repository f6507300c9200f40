// Rendering of the scope's numbers, who is online and the activity feed.
// Each part keeps its DOM nodes keyed (by kind, subject type, user, offset)
// and updates them in place, so a change can be highlighted and screen
// readers are not flooded with rebuilt lists.

import { describe, iconOf, KIND_ORDER, kindLabel, plural } from './sentences.js';
import { drawSparkline } from './sparkline.js';
import { $, ago, clockTime, count, flash, fmt, h, hue, humanize, icon, initials } from './util.js';

export const FEED_MAX = 50;

/** Lifecycle order of well-known states; others follow alphabetically. */
const STATE_ORDER = ['pending', 'queued', 'open', 'in_progress', 'used', 'answered', 'completed', 'approved', 'closed', 'rejected'];
const STATE_TONE = {
  pending: 'amber',
  queued: 'amber',
  open: 'blue',
  in_progress: 'blue',
  used: 'green',
  answered: 'green',
  completed: 'green',
  approved: 'green',
  closed: 'grey',
  rejected: 'red',
};
const EXTRA_TONES = ['violet', 'teal', 'pink', 'amber', 'blue'];

function toneOf(state) {
  if (STATE_TONE[state]) return STATE_TONE[state];
  return EXTRA_TONES[hue(state) % EXTRA_TONES.length];
}

function orderStates(states) {
  return Object.keys(states).sort((a, b) => {
    const ia = STATE_ORDER.indexOf(a);
    const ib = STATE_ORDER.indexOf(b);
    if (ia !== -1 || ib !== -1) return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
    return a.localeCompare(b);
  });
}

function orderKinds(counts) {
  return Object.keys(counts).sort((a, b) => {
    const ia = KIND_ORDER.indexOf(a);
    const ib = KIND_ORDER.indexOf(b);
    if (ia !== -1 || ib !== -1) return (ia === -1 ? 999 : ia) - (ib === -1 ? 999 : ib);
    return counts[b] - counts[a] || a.localeCompare(b);
  });
}

export class Dashboard {
  constructor() {
    this.kpiNodes = new Map();
    this.stateNodes = new Map();
    this.prev = null;
    this.feedQueue = [];
    this.feedCount = 0;
    this.me = null;
    setInterval(() => this.refreshTimes(), 15_000);
  }

  reset() {
    this.prev = null;
    this.kpiNodes.clear();
    this.stateNodes.clear();
    $('#kpis').replaceChildren();
    $('#states').replaceChildren();
    for (const id of ['#online-count', '#events-minute', '#active-total']) $(id).textContent = '–';
    $('#active-list').replaceChildren();
    $('#counts-total').textContent = '';
    this.resetFeed();
    this.renderPeople(new Map(), 0);
  }

  // ---- stats ------------------------------------------------------------------

  renderStats(stats, samples) {
    const prev = this.prev;
    this.prev = stats;
    const changed = (path, value) => prev && JSON.stringify(path(prev)) !== JSON.stringify(value);

    this.setNumber($('#online-count'), stats.online_users, prev && changed((s) => s.online_users, stats.online_users));
    this.setNumber($('#events-minute'), stats.events_last_minute, false);
    samples.add(stats.events_last_minute);
    this.drawSpark(samples);

    const active = stats.active_subjects ?? {};
    const activeTotal = Object.values(active).reduce((a, b) => a + b, 0);
    this.setNumber($('#active-total'), activeTotal, changed((s) => s.active_subjects, active));
    $('#active-list').replaceChildren(
      ...Object.entries(active)
        .sort((a, b) => b[1] - a[1])
        .map(([type, n]) => h('li', { class: 'chip', dataset: { type } }, h('strong', { text: fmt(n) }), ` ${plural(type, n)}`)),
    );
    $('#last-event').textContent = stats.last_event_at ? `last event ${ago(stats.last_event_at)}` : 'no events yet';
    $('#last-event').dataset.at = stats.last_event_at ?? '';

    this.renderKpis(stats.counts ?? {}, prev?.counts ?? null);
    this.renderStates(stats.states ?? {});
  }

  drawSpark(samples) {
    const now = this.prev?.events_last_minute ?? 0;
    drawSparkline($('#spark'), samples.points, {
      label: `Events per minute over the last 15 minutes; now ${fmt(now)}`,
    });
  }

  setNumber(el, value, highlight) {
    const text = fmt(value);
    if (el.textContent !== text) el.textContent = text;
    if (highlight) flash(el.closest('.card') ?? el);
  }

  renderKpis(counts, prevCounts) {
    const list = $('#kpis');
    const kinds = orderKinds(counts);
    let total = 0;
    for (const kind of kinds) {
      const n = counts[kind];
      total += n;
      let node = this.kpiNodes.get(kind);
      if (!node) {
        const value = h('span', { class: 'kpi-value', dataset: { testid: 'kpi-value' } });
        const delta = h('span', { class: 'kpi-delta', 'aria-hidden': 'true' });
        const el = h(
          'li',
          { class: 'kpi card', dataset: { kind } },
          icon(iconOf(kind), { className: 'kpi-icon kind-icon' }),
          h('span', { class: 'kpi-label', text: kindLabel(kind), title: kind }),
          value,
          delta,
        );
        node = { el, value, delta };
        this.kpiNodes.set(kind, node);
      }
      const text = fmt(n);
      if (node.value.textContent !== text) {
        node.value.textContent = text;
        const before = prevCounts?.[kind];
        if (prevCounts && n !== before) {
          node.delta.textContent = `+${fmt(n - (before ?? 0))}`;
          flash(node.el);
        }
      }
    }
    // Keep the DOM in order without recreating nodes (no re-announcement).
    kinds.forEach((kind, i) => {
      const el = this.kpiNodes.get(kind).el;
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] ?? null);
    });
    for (const [kind, node] of this.kpiNodes) {
      if (!(kind in counts)) {
        node.el.remove();
        this.kpiNodes.delete(kind);
      }
    }
    $('#kpis-empty').hidden = kinds.length > 0;
    $('#counts-total').textContent = kinds.length ? `· ${fmt(total)} events` : '';
  }

  renderStates(states) {
    const host = $('#states');
    const types = Object.keys(states).sort();
    for (const type of types) {
      const byState = states[type] ?? {};
      const order = orderStates(byState);
      const total = order.reduce((a, s) => a + byState[s], 0);
      let node = this.stateNodes.get(type);
      if (!node) {
        const bar = h('div', { class: 'bar', 'aria-hidden': 'true' });
        const legend = h('ul', { class: 'legend' });
        const title = h('span', { class: 'state-total' });
        const el = h(
          'div',
          { class: 'state-block', dataset: { type } },
          h('h3', { class: 'state-title' }, h('span', { text: humanize(plural(type)) }), title),
          bar,
          legend,
        );
        node = { el, bar, legend, title, prev: {} };
        this.stateNodes.set(type, node);
      }
      node.title.textContent = `${fmt(total)} total`;
      node.bar.replaceChildren(
        ...order
          .filter((s) => byState[s] > 0)
          .map((s) => {
            const seg = h('span', { class: `seg tone-${toneOf(s)}`, dataset: { state: s }, title: `${humanize(s)}: ${fmt(byState[s])}` });
            seg.style.flexGrow = String(byState[s]);
            return seg;
          }),
      );
      node.legend.replaceChildren(
        ...order.map((s) => {
          const pct = total ? Math.round((byState[s] / total) * 100) : 0;
          const li = h(
            'li',
            { dataset: { state: s } },
            h('span', { class: `swatch tone-${toneOf(s)}`, 'aria-hidden': 'true' }),
            h('span', { class: 'legend-name', text: humanize(s) }),
            h('span', { class: 'legend-value', dataset: { testid: 'state-value' }, text: fmt(byState[s]) }),
            h('span', { class: 'legend-pct', text: `${pct}%` }),
          );
          if (node.prev[s] !== undefined && node.prev[s] !== byState[s]) flash(li);
          return li;
        }),
      );
      node.prev = { ...byState };
    }
    types.forEach((type, i) => {
      const el = this.stateNodes.get(type).el;
      if (host.children[i] !== el) host.insertBefore(el, host.children[i] ?? null);
    });
    for (const [type, node] of this.stateNodes) {
      if (!(type in states)) {
        node.el.remove();
        this.stateNodes.delete(type);
      }
    }
    $('#states-empty').hidden = types.length > 0;
  }

  // ---- presence -----------------------------------------------------------------

  renderPeople(users, online) {
    const list = $('#people');
    const sorted = [...users.values()].sort((a, b) => {
      const rank = (u) => (u.id === this.me ? 0 : u.status === 'online' && u.sessions > 0 ? 1 : u.sessions > 0 ? 2 : 3);
      return rank(a) - rank(b) || (a.name || a.id).localeCompare(b.name || b.id);
    });
    const existing = new Map([...list.children].map((li) => [li.dataset.userId, li]));
    sorted.forEach((u, i) => {
      const away = !(u.sessions > 0);
      const status = away ? 'away' : u.status === 'idle' ? 'idle' : 'online';
      const name = u.name || u.id;
      const tabs = u.sessions > 0 ? count(u.sessions, { one: 'tab', other: 'tabs' }) : 'leaving';
      const signature = `${name}|${status}|${tabs}`;
      let li = existing.get(u.id);
      existing.delete(u.id);
      if (!li || li.dataset.signature !== signature) {
        const fresh = h(
          'li',
          { class: `person status-${status}`, dataset: { userId: u.id, status, signature } },
          h('span', { class: 'avatar', 'aria-hidden': 'true', text: initials(name) }),
          h(
            'span',
            { class: 'person-main' },
            h('span', { class: 'person-name', dataset: { testid: 'person-name' } }, name, u.id === this.me ? h('span', { class: 'you', text: ' (you)' }) : null),
            h('span', { class: 'person-meta' }, h('span', { class: 'status-dot', 'aria-hidden': 'true' }), h('span', { class: 'person-status', text: status }), ` · ${tabs}`),
          ),
        );
        fresh.querySelector('.avatar').style.setProperty('--h', String(hue(u.id)));
        if (li) li.replaceWith(fresh);
        li = fresh;
      }
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
    });
    for (const li of existing.values()) li.remove();
    const here = sorted.filter((u) => u.sessions > 0);
    const faces = here.slice(0, 6).map((u) => {
      const face = h('li', { class: 'avatar', title: u.name || u.id, text: initials(u.name || u.id) });
      face.style.setProperty('--h', String(hue(u.id)));
      return face;
    });
    if (here.length > 6) faces.push(h('li', { class: 'avatar more', text: `+${here.length - 6}` }));
    $('#online-faces').replaceChildren(...faces);
    const names = here.slice(0, 2).map((u) => (u.id === this.me ? 'you' : u.name || u.id));
    $('#online-sub').textContent = here.length === 0
      ? 'nobody is here'
      : here.length <= 2
        ? names.join(' and ')
        : `${names.join(', ')} and ${fmt(here.length - 2)} more`;
    $('#people-count').textContent = fmt(online);
    $('#people-count').setAttribute('aria-label', `${count(online, { one: 'person', other: 'people' })} online`);
    $('#people-empty').hidden = sorted.length > 0;
  }

  // ---- feed -----------------------------------------------------------------------

  resetFeed() {
    this.feedQueue = [];
    $('#feed').replaceChildren();
    $('#feed-empty').hidden = false;
  }

  /** Queues an `event` frame; rendered on the next animation frame, newest first. */
  addEvent(frame) {
    this.feedQueue.push(frame);
    if (this.feedQueue.length > FEED_MAX) this.feedQueue.splice(0, this.feedQueue.length - FEED_MAX);
    if (!this.feedTimer) this.feedTimer = requestAnimationFrame(() => this.flushFeed());
  }

  flushFeed() {
    this.feedTimer = null;
    const list = $('#feed');
    const items = this.feedQueue.splice(0).map((f) => this.feedItem(f));
    if (items.length === 0) return;
    list.prepend(...items.reverse());
    while (list.children.length > FEED_MAX) list.lastElementChild.remove();
    $('#feed-empty').hidden = true;
  }

  feedItem(frame) {
    const e = frame.event;
    const { text, detail } = describe(e);
    return h(
      'li',
      { class: 'feed-item fresh', dataset: { offset: frame.offset, kind: e.kind } },
      icon(iconOf(e.kind), { className: 'feed-icon kind-icon' }),
      h('span', { class: 'feed-main' }, h('span', { class: 'feed-text', text }), detail ? h('span', { class: 'feed-detail', text: detail }) : null),
      h('time', { class: 'feed-time', datetime: e.at, dataset: { at: e.at }, title: clockTime(e.at), text: ago(e.at) }),
    );
  }

  refreshTimes() {
    const now = Date.now();
    for (const t of document.querySelectorAll('#feed time[data-at]')) t.textContent = ago(t.dataset.at, now);
    const last = $('#last-event');
    if (last.dataset.at) last.textContent = `last event ${ago(last.dataset.at, now)}`;
  }
}
