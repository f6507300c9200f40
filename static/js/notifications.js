// Notifications: toasts by level, and a notification centre with an unread
// count, clear-all and per-level pop-up preferences.
//
// The list is the client's notifications view (`system` and `user:{id}`,
// newest first, without duplicates). History survives a reload through the
// hub: the channels are recoverable, so subscribing to them brings back their
// recent notifications. What this browser has read or cleared is remembered
// as an offset per channel (localStorage, per user), not as copies of the
// items, and applied to the view as items arrive. Only notifications that
// arrive while the page is open (or that it missed while reconnecting) pop
// up; what a channel already had when the page subscribed does not.

import { $, ago, h, icon, store } from './util.js';

// Each level is also the name of its icon in static/icons.svg.
const LEVELS = ['info', 'success', 'warning', 'error'];
const TOAST_MS = { info: 6000, success: 6000, warning: 10000, error: 20000 };
const MAX_TOASTS = 4;
const MAX_ITEMS = 100;

export class Notifications {
  /**
   * @param {import('/sdk/pulsehub.js').PulseClient} client
   * @param {string} userId
   */
  constructor(client, userId) {
    this.key = (what) => `pulsehub.notify.${userId}.${what}`;
    this.read = store.get(this.key('read'), {});
    this.cleared = store.get(this.key('cleared'), {});
    this.muted = store.get(this.key('muted'), {});
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
    this.view = client.notifications({
      limit: MAX_ITEMS,
      onSubscribed: (info) => this.subscribed(info),
      onReset: (info) => this.reset(info),
      onNotification: (entry) => this.arrived(entry),
      onChange: () => this.scheduleRender(),
    });
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

  /** A (re)subscription of a channel; `offset` is its latest. */
  subscribed({ channel, offset }) {
    this.rebase(channel, offset);
    if (!this.floor.has(channel)) this.floor.set(channel, offset);
  }

  /** The channel cannot go on from where the page was: its latest items follow. */
  reset({ channel, offset, reason }) {
    this.rebase(channel, offset ?? 0);
    if (reason !== 'rewound') return;
    // A new history (a new database): what the page holds has the old offsets.
    this.floor.set(channel, Math.min(this.floor.get(channel) ?? 0, offset ?? 0));
    for (const item of this.view.items) if (item.channel === channel) this.view.dismiss(item.id);
  }

  /** Marks past the channel's latest offset belong to an earlier history: forgotten. */
  rebase(channel, offset) {
    for (const [what, marks] of [['read', this.read], ['cleared', this.cleared]]) {
      if ((marks[channel] ?? 0) > offset) {
        marks[channel] = 0;
        store.set(this.key(what), marks);
      }
    }
  }

  /** A notification new to the view. */
  arrived(entry) {
    const { channel, offset } = entry;
    if (offset <= (this.cleared[channel] ?? 0)) {
      this.view.dismiss(entry.id);
      return;
    }
    if (offset <= (this.read[channel] ?? 0)) this.view.markRead(entry.id);
    if (offset > (this.floor.get(channel) ?? 0)) {
      this.floor.set(channel, offset);
      if (!this.els.centre.hidden) this.markRead(entry);
      else this.popUp(entry);
    }
  }

  markRead(entry) {
    if (entry.offset > (this.read[entry.channel] ?? 0)) {
      this.read[entry.channel] = entry.offset;
      store.set(this.key('read'), this.read);
    }
    this.view.markRead(entry.id);
  }

  markAllRead() {
    for (const item of this.view.items) this.markRead(item);
    this.renderBadge();
  }

  clearAll() {
    for (const item of this.view.items) {
      this.cleared[item.channel] = Math.max(this.cleared[item.channel] ?? 0, item.offset);
      this.markRead(item);
      this.view.dismiss(item.id);
    }
    store.set(this.key('cleared'), this.cleared);
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
    const n = this.view.unread;
    const { badge, bell } = this.els;
    badge.hidden = n === 0;
    badge.textContent = n > 99 ? '99+' : String(n);
    bell.title = n ? `Notifications: ${n} unread` : 'Notifications';
    bell.querySelector('.visually-hidden').textContent = n ? `Notifications, ${n} unread` : 'Notifications';
  }

  render() {
    this.renderBadge();
    if (this.els.centre.hidden) return;
    const items = this.view.items;
    this.els.empty.hidden = items.length > 0;
    this.els.list.replaceChildren(
      ...items.map((n) => {
        const level = LEVELS.includes(n.level) ? n.level : 'info';
        return h(
          'li',
          { class: `note level-${level}${n.read ? '' : ' unread'}`, dataset: { offset: n.offset, channel: n.channel } },
          icon(level, { className: 'note-icon' }),
          h(
            'div',
            { class: 'note-body' },
            h('p', { class: 'note-title' }, h('span', { class: 'visually-hidden', text: `${level}: ` }), n.title ?? ''),
            n.body ? h('p', { class: 'note-text', text: n.body }) : null,
            h('p', { class: 'note-meta' }, h('time', { datetime: n.at, dataset: { at: n.at }, text: ago(n.at) }), n.channel === 'system' ? ' · system' : ' · for you'),
          ),
        );
      }),
    );
  }

  refreshTimes() {
    for (const t of document.querySelectorAll('#notes time[data-at]')) t.textContent = ago(t.dataset.at);
  }

  popUp(entry) {
    const level = LEVELS.includes(entry.level) ? entry.level : 'info';
    if (this.muted[level]) return;
    // Many at once (a reconnect's catch-up): one summary instead of a flood.
    this.burst.push(entry);
    if (this.burstTimer) return;
    this.burstTimer = setTimeout(() => {
      const burst = this.burst;
      this.burst = [];
      this.burstTimer = null;
      if (burst.length > 3) {
        this.toast('info', `${burst.length} new notifications`, 'Open the notification centre to read them.', () => this.open());
      } else {
        for (const n of burst) this.toast(LEVELS.includes(n.level) ? n.level : 'info', n.title, n.body);
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
