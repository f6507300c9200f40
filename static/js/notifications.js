// Notifications: toasts by level, and a notification centre with an unread
// count, clear-all and per-level pop-up preferences.
//
// History survives a reload through the hub: the `system` and `user:{id}`
// channels are recoverable, so subscribing to them brings back their recent
// notifications. What this browser has read or cleared is remembered as an
// offset per channel (localStorage, per user), not as copies of the items.
// Only notifications that arrive while the page is open (or that it missed
// while reconnecting) pop up; history loaded with the page does not.

import { $, ago, h, icon, store } from './util.js';

// Each level is also the name of its icon in static/icons.svg.
const LEVELS = ['info', 'success', 'warning', 'error'];
const TOAST_MS = { info: 6000, success: 6000, warning: 10000, error: 20000 };
const MAX_TOASTS = 4;
const MAX_ITEMS = 100;

export class Notifications {
  constructor(userId) {
    this.key = (what) => `pulsehub.notify.${userId}.${what}`;
    this.read = store.get(this.key('read'), {});
    this.cleared = store.get(this.key('cleared'), {});
    this.muted = store.get(this.key('muted'), {});
    this.items = new Map(); // `${channel}#${offset}` -> frame
    this.floor = new Map(); // channel -> highest offset that must not pop up
    this.burst = [];
    this.els = {
      bell: $('#bell'),
      badge: $('#unread'),
      centre: $('#centre'),
      list: $('#notes'),
      empty: $('#notes-empty'),
      toasts: $('#toasts'),
    };
    this.wire();
    this.render();
  }

  wire() {
    const { bell, centre } = this.els;
    bell.addEventListener('click', () => (centre.hidden ? this.open() : this.close()));
    $('#centre-close').addEventListener('click', () => this.close());
    $('#clear-all').addEventListener('click', () => this.clearAll());
    centre.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.close();
    });
    for (const box of centre.querySelectorAll('input[data-level]')) {
      box.checked = !this.muted[box.dataset.level];
      box.addEventListener('change', () => {
        this.muted[box.dataset.level] = !box.checked;
        store.set(this.key('muted'), this.muted);
      });
    }
    setInterval(() => this.refreshTimes(), 30_000);
  }

  open() {
    this.els.centre.hidden = false;
    this.els.bell.setAttribute('aria-expanded', 'true');
    this.render();
    this.markAllRead();
    $('#centre-close').focus();
  }

  close() {
    if (this.els.centre.hidden) return;
    this.els.centre.hidden = true;
    this.els.bell.setAttribute('aria-expanded', 'false');
    this.render();
    this.els.bell.focus();
  }

  /** `subscribed` on a notification channel. */
  subscribed(frame) {
    const { channel, offset } = frame;
    // The hub's history restarted (a new database): old marks mean nothing.
    for (const marks of [this.read, this.cleared]) {
      if ((marks[channel] ?? 0) > offset) marks[channel] = 0;
    }
    if (!frame.recovered) {
      for (const k of [...this.items.keys()]) if (k.startsWith(`${channel}#`)) this.items.delete(k);
    }
    // History delivered with the first subscription does not pop up.
    if (!this.floor.has(channel)) this.floor.set(channel, offset);
    this.render();
  }

  /** A `notification` frame. */
  add(frame) {
    const { channel, offset } = frame;
    const id = `${channel}#${offset}`;
    if (this.items.has(id) || offset <= (this.cleared[channel] ?? 0)) return;
    this.items.set(id, frame);
    if (this.items.size > MAX_ITEMS) {
      const oldest = this.sorted().pop();
      this.items.delete(`${oldest.channel}#${oldest.offset}`);
    }
    if (offset > (this.floor.get(channel) ?? 0)) {
      this.floor.set(channel, offset);
      if (!this.els.centre.hidden) this.markRead(channel, offset);
      else this.popUp(frame);
    }
    this.scheduleRender();
  }

  sorted() {
    return [...this.items.values()].sort(
      (a, b) => Date.parse(b.notification.at) - Date.parse(a.notification.at) || b.offset - a.offset,
    );
  }

  unread() {
    let n = 0;
    for (const f of this.items.values()) if (f.offset > (this.read[f.channel] ?? 0)) n += 1;
    return n;
  }

  markRead(channel, offset) {
    if (offset > (this.read[channel] ?? 0)) {
      this.read[channel] = offset;
      store.set(this.key('read'), this.read);
    }
  }

  markAllRead() {
    for (const f of this.items.values()) this.markRead(f.channel, f.offset);
    this.renderBadge();
  }

  clearAll() {
    for (const f of this.items.values()) {
      this.cleared[f.channel] = Math.max(this.cleared[f.channel] ?? 0, f.offset);
      this.markRead(f.channel, f.offset);
    }
    store.set(this.key('cleared'), this.cleared);
    this.items.clear();
    this.render();
  }

  scheduleRender() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.render();
    });
  }

  renderBadge() {
    const n = this.unread();
    const { badge, bell } = this.els;
    badge.hidden = n === 0;
    badge.textContent = n > 99 ? '99+' : String(n);
    bell.title = n ? `Notifications: ${n} unread` : 'Notifications';
    bell.querySelector('.visually-hidden').textContent = n ? `Notifications, ${n} unread` : 'Notifications';
  }

  render() {
    this.renderBadge();
    if (this.els.centre.hidden) return;
    const items = this.sorted();
    this.els.empty.hidden = items.length > 0;
    this.els.list.replaceChildren(
      ...items.map((f) => {
        const n = f.notification;
        const level = LEVELS.includes(n.level) ? n.level : 'info';
        return h(
          'li',
          { class: `note level-${level}${f.offset > (this.read[f.channel] ?? 0) ? ' unread' : ''}`, dataset: { offset: f.offset, channel: f.channel } },
          icon(level, { className: 'note-icon' }),
          h(
            'div',
            { class: 'note-body' },
            h('p', { class: 'note-title' }, h('span', { class: 'visually-hidden', text: `${level}: ` }), n.title ?? ''),
            n.body ? h('p', { class: 'note-text', text: n.body }) : null,
            h('p', { class: 'note-meta' }, h('time', { datetime: n.at, dataset: { at: n.at }, text: ago(n.at) }), f.channel === 'system' ? ' · system' : ' · for you'),
          ),
        );
      }),
    );
  }

  refreshTimes() {
    for (const t of document.querySelectorAll('#notes time[data-at]')) t.textContent = ago(t.dataset.at);
  }

  popUp(frame) {
    const level = LEVELS.includes(frame.notification.level) ? frame.notification.level : 'info';
    if (this.muted[level]) return;
    // Many at once (a reconnect's catch-up): one summary instead of a flood.
    this.burst.push(frame);
    if (this.burstTimer) return;
    this.burstTimer = setTimeout(() => {
      const burst = this.burst;
      this.burst = [];
      this.burstTimer = null;
      if (burst.length > 3) {
        this.toast('info', `${burst.length} new notifications`, 'Open the notification centre to read them.', () => this.open());
      } else {
        for (const f of burst) {
          const lv = LEVELS.includes(f.notification.level) ? f.notification.level : 'info';
          this.toast(lv, f.notification.title, f.notification.body);
        }
      }
    }, 50);
  }

  toast(level, title, body, onOpen) {
    const close = () => {
      el.classList.add('leaving');
      setTimeout(() => el.remove(), 200);
    };
    const el = h(
      'div',
      { class: `toast level-${level}`, role: level === 'error' || level === 'warning' ? 'alert' : 'status', dataset: { level } },
      icon(level, { className: 'note-icon' }),
      h(
        'div',
        { class: 'note-body' },
        h('p', { class: 'note-title' }, h('span', { class: 'visually-hidden', text: `${level}: ` }), title ?? ''),
        body ? h('p', { class: 'note-text', text: body }) : null,
        onOpen ? h('button', { type: 'button', class: 'link-button', text: 'Show', onclick: () => { close(); onOpen(); } }) : null,
      ),
      h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: close }, icon('close')),
    );
    const { toasts } = this.els;
    toasts.append(el);
    while (toasts.children.length > MAX_TOASTS) toasts.firstElementChild.remove();
    let timer = setTimeout(close, TOAST_MS[level]);
    el.addEventListener('mouseenter', () => clearTimeout(timer));
    el.addEventListener('mouseleave', () => (timer = setTimeout(close, TOAST_MS[level])));
  }
}
