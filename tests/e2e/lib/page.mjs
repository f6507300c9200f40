// Reading the dashboard the way a person does: by what it shows.

import assert from 'node:assert/strict';

export const PATIENCE = 30_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Retries `check` (which throws or returns false) until it passes. */
export async function eventually(check, { timeout = PATIENCE, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const ok = await check();
      if (ok !== false) return ok;
      last = new Error(`${what} not met`);
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      last.message = `${what} (after ${timeout} ms): ${last.message}`;
      throw last;
    }
    await sleep(200);
  }
}

export const digits = (s) => (s == null ? null : Number(String(s).replace(/[^\d]/g, '')));

export async function waitForMode(page, mode, timeout = PATIENCE) {
  await page.waitForSelector(`#conn[data-mode="${mode}"]`, { timeout });
}

export async function connText(page) {
  return (await page.textContent('#conn-text')).trim();
}

/** The KPI card of `kind`: its number, or null when there is no card. */
export async function kpi(page, kind) {
  const el = await page.$(`.kpi[data-kind="${kind}"] .kpi-value`);
  return el ? digits(await el.textContent()) : null;
}

/** Every KPI card as {kind: number}. */
export async function kpis(page) {
  return page.$$eval('.kpi', (els) => Object.fromEntries(els.map((e) => [e.dataset.kind, Number(e.querySelector('.kpi-value').textContent.replace(/[^\d]/g, ''))])));
}

/** The state legend as {type: {state: number}}. */
export async function states(page) {
  return page.$$eval('.state-block', (blocks) =>
    Object.fromEntries(
      blocks.map((b) => [
        b.dataset.type,
        Object.fromEntries([...b.querySelectorAll('.legend li')].map((li) => [li.dataset.state, Number(li.querySelector('.legend-value').textContent.replace(/[^\d]/g, ''))])),
      ]),
    ),
  );
}

/** Feed lines, newest first: [{offset, text}]. */
export async function feed(page) {
  return page.$$eval('#feed li', (els) => els.map((e) => ({ offset: Number(e.dataset.offset), text: e.querySelector('.feed-text').textContent })));
}

/** Asserts the feed shows consecutive offsets, newest first, without duplicates. */
export function assertNoGap(lines) {
  const offsets = lines.map((l) => l.offset);
  for (let i = 1; i < offsets.length; i += 1) {
    assert.equal(offsets[i], offsets[i - 1] - 1, `feed offsets must be consecutive, got ${offsets.join(',')}`);
  }
}

/** The online list as {userId: {name, status, tabs}}. */
export async function people(page) {
  return page.$$eval('#people li', (els) =>
    Object.fromEntries(
      els.map((e) => [e.dataset.userId, { name: e.querySelector('.person-name').firstChild.textContent, status: e.dataset.status, meta: e.querySelector('.person-meta').textContent }]),
    ),
  );
}

export async function toasts(page) {
  return page.$$eval('#toasts .toast', (els) => els.map((e) => ({ level: e.dataset.level, text: e.textContent })));
}

export async function centre(page) {
  return page.$$eval('#notes li', (els) => els.map((e) => ({ text: e.textContent, unread: e.classList.contains('unread') })));
}

export async function unread(page) {
  return page.$eval('#unread', (b) => (b.hidden ? 0 : Number(b.textContent.replace(/[^\d]/g, ''))));
}

/** The page's icons that do not draw: a `<use>` that names no symbol of
 *  /static/icons.svg, or a visible one that renders nothing (sprite blocked). */
export async function brokenIcons(page) {
  return page.evaluate(async () => {
    const text = await (await fetch('/static/icons.svg')).text();
    const sprite = new DOMParser().parseFromString(text, 'image/svg+xml');
    const broken = [];
    for (const use of document.querySelectorAll('use')) {
      const href = use.getAttribute('href') ?? '';
      const [file, id] = href.split('#');
      if (file !== '/static/icons.svg' || sprite.getElementById(id)?.localName !== 'symbol') broken.push(href);
      else if (use.ownerSVGElement.checkVisibility() && !(use.getBBox().width > 0)) broken.push(`${href} (not drawn)`);
    }
    return broken;
  });
}
