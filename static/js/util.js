// Small helpers shared by the dashboard modules. No framework: elements are
// built with h() and text always goes through textContent (never innerHTML),
// so nothing a service ingests can inject markup.

/** Creates an element: h('li', {class: 'x', dataset: {offset: 3}}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** SVG element with attributes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** The sprite of the dashboard's icons (static/icons.svg, one <symbol> each). */
const SPRITE = '/static/icons.svg';

/**
 * An icon of the sprite: <svg class="icon" data-icon=name><use href=…#name>.
 * Always decorative (aria-hidden): each icon sits next to text that says the
 * same, or inside a control that carries the name (aria-label).
 */
export function icon(name, { className } = {}) {
  const attrs = { class: className ? `icon ${className}` : 'icon', 'data-icon': name, 'aria-hidden': 'true' };
  return svg('svg', attrs, svg('use', { href: `${SPRITE}#${name}` }));
}

const numberFormat = new Intl.NumberFormat();
export const fmt = (n) => (typeof n === 'number' ? numberFormat.format(n) : '–');

// Words follow the page's language (the sentences are English), numbers the
// browser's locale.
const LANG = globalThis.document?.documentElement.lang || 'en';
const relativeTime = new Intl.RelativeTimeFormat(LANG, { style: 'short', numeric: 'auto' });
const pluralRules = new Intl.PluralRules(LANG);

/** The form of `forms` ({one, other, …}: CLDR plural categories) that goes with `n`. */
export const pluralForm = (n, forms) => forms[pluralRules.select(n)] ?? forms.other;

/** `n` and its noun: count(2, {one: 'tab', other: 'tabs'}) -> "2 tabs". */
export const count = (n, forms) => `${fmt(n)} ${pluralForm(n, forms)}`;

/** "now", "5 sec. ago", "3 min. ago", "2 hr. ago" (Intl.RelativeTimeFormat), or a date after a day. */
export function ago(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 5) return relativeTime.format(0, 'second');
  if (s < 60) return relativeTime.format(-s, 'second');
  if (s < 3600) return relativeTime.format(-Math.floor(s / 60), 'minute');
  if (s < 86400) return relativeTime.format(-Math.floor(s / 3600), 'hour');
  return new Date(t).toLocaleDateString();
}

export function clockTime(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? '' : t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** Seconds as "42 s", "3 min 20 s", "2 h 5 min". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  return `${Math.floor(s / 3600)} h${Math.floor((s % 3600) / 60) ? ` ${Math.floor((s % 3600) / 60)} min` : ''}`;
}

/** "in_progress" -> "In progress", "message.sent" -> "Message sent". */
export function humanize(name) {
  const s = String(name ?? '').replace(/[._:-]+/g, ' ').trim();
  return s ? s[0].toUpperCase() + s.slice(1) : '';
}

export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

/** A stable hue for a string (avatars). */
export function hue(s) {
  let x = 0;
  for (const c of String(s)) x = (x * 31 + c.codePointAt(0)) >>> 0;
  return x % 360;
}

/** localStorage that never throws (private mode, quota, disabled storage). */
export const store = {
  get(key, fallback = null) {
    try {
      const raw = localStorage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      /* storage unavailable: the preference lasts for this page only */
    }
  },
  remove(key) {
    try {
      localStorage.removeItem(key);
    } catch {
      /* ignore */
    }
  },
};

/** Replays a CSS animation class on an element. */
export function flash(el, className = 'flash') {
  el.classList.remove(className);
  void el.offsetWidth; // restart the animation
  el.classList.add(className);
}
