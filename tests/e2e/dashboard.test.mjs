// The dashboard against a real hub (demo mode, fresh database) in headless
// Debian chromium: numbers, live events, presence, notifications, pause, and
// the screenshots in docs/screenshots/.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launch, openPage, screenshot } from './lib/browser.mjs';
import { checkIn, Hub, task } from './lib/hub.mjs';
import { assertNoGap, brokenIcons, centre, eventually, feed, kpi, kpis, people, states, toasts, unread, waitForMode } from './lib/page.mjs';

const SCOPE = 'demo';
let hub;
let browser;
let reader; // a token for reading the HTTP API (never connects: not present)
let maria; // the first person's page

/** A quarter of an hour of chat traffic with past times, so the sparkline has a history. */
function pastTraffic() {
  const names = ['Maria', 'Tom', 'Amara', 'Kenji', 'Lucas', 'Yuki'];
  const now = Date.now();
  const events = [];
  for (let m = 14; m >= 1; m -= 1) {
    const perMinute = Math.round(34 + 14 * Math.sin(m / 1.7) + (14 - m) * 2);
    for (let i = 0; i < perMinute; i += 1) {
      const name = names[(m * 7 + i) % names.length];
      const at = new Date(now - m * 60_000 - Math.floor((i / perMinute) * 60_000)).toISOString();
      events.push(
        i % 4 === 3
          ? { scope: SCOPE, kind: 'reaction', actor: { id: name.toLowerCase(), name }, subject: { type: 'chat', id: `c${(i % 5) + 1}`, state: 'open' }, data: { emoji: '👍' }, at }
          : { scope: SCOPE, kind: 'message.sent', actor: { id: name.toLowerCase(), name }, subject: { type: 'chat', id: `c${(i % 5) + 1}`, state: 'open' }, data: { chars: 20 + i }, at },
      );
    }
  }
  return events;
}

before(async () => {
  hub = await Hub.start();
  await hub.postEvents(pastTraffic());
  await hub.simulate(['--scopes', SCOPE, '--count', '80', '--rate', '1000', '--seed', '7', '--users', '24']);
  reader = await hub.token('e2e-reader', 'Reader');
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.destroy();
});

describe('dashboard', { timeout: 300_000 }, () => {
  test('connects and shows the numbers the HTTP API reports', async () => {
    maria = await openPage(browser, `${hub.url}/?user=maria&name=Maria%20Lopez`);
    await waitForMode(maria, 'live');
    assert.match(await maria.textContent('#me'), /Maria Lopez/);
    assert.equal(await maria.inputValue('#scope'), SCOPE);

    await eventually(async () => {
      const api = await hub.stats(SCOPE, reader);
      assert.deepEqual(await kpis(maria), api.counts);
      assert.deepEqual(await states(maria), api.states);
      const active = Object.values(api.active_subjects).reduce((a, b) => a + b, 0);
      assert.equal(Number((await maria.textContent('#active-total')).replace(/[^\d]/g, '')), active);
      assert.equal(Number((await maria.textContent('#online-count')).replace(/[^\d]/g, '')), api.online_users);
      assert.equal(api.online_users, 1, 'Maria is online');
    }, { what: 'page numbers equal GET /api/scopes/demo/stats' });

    // The feed: the last items of the scope, newest first, as sentences.
    // Its replay arrives on its own subscription, maybe after the stats.
    await eventually(async () => {
      const history = await hub.history(`feed:${SCOPE}`, reader, '?limit=1');
      const lines = await feed(maria);
      assert.ok(lines.length >= 20, 'the feed is not empty on first load');
      assert.equal(lines[0].offset, history.offset);
      assertNoGap(lines);
    }, { what: 'the feed shows the latest items of the scope' });
    assert.deepEqual(maria.errors, []);
  });

  test('a posted event appears (count, state bar, feed line) without reload', async () => {
    await maria.evaluate(() => (window.__sameDocument = true));
    const before = await kpi(maria, 'check_in');
    const tasksBefore = (await states(maria)).task?.pending ?? 0;

    await hub.postEvents([checkIn(SCOPE, 'Zed', 1), task(SCOPE, 'Zed', 'e2e-task-1', 'pending')]);

    await eventually(async () => {
      assert.equal(await kpi(maria, 'check_in'), before + 1);
      assert.equal((await states(maria)).task.pending, tasksBefore + 1);
      const lines = await feed(maria);
      assert.equal(lines[0].text, 'Zed created a task “Task e2e-task-1”');
      assert.equal(lines[1].text, 'Zed checked in at gate A');
      assertNoGap(lines);
    }, { what: 'the new event on the page' });
    assert.equal(await maria.evaluate(() => window.__sameDocument), true, 'no reload');
  });

  test('a second user appears in the online list; a second tab counts once', async () => {
    const tom = await openPage(browser, `${hub.url}/?user=tom&name=Tom%20Becker`);
    await waitForMode(tom, 'live');
    await eventually(async () => {
      const list = await people(maria);
      assert.equal(list.tom?.name, 'Tom Becker');
      assert.equal(list.tom.status, 'online');
      assert.equal(await maria.textContent('#people-count'), '2');
    }, { what: 'Tom in Maria’s online list' });

    // Maria opens a second tab: both tabs are live, she is one person with two tabs.
    const tab2 = await maria.context().newPage();
    await tab2.goto(`${hub.url}/`);
    await waitForMode(tab2, 'live');
    await eventually(async () => {
      const list = await people(tom);
      assert.match(list.maria.meta, /2 tabs/);
      assert.equal(await tom.textContent('#people-count'), '2');
    }, { what: 'Maria with two tabs, counted once' });
    await hub.postEvents([checkIn(SCOPE, 'Tabitha', 1)]);
    for (const page of [maria, tab2]) {
      await eventually(async () => assert.equal((await feed(page))[0].text, 'Tabitha checked in at gate A'), { what: 'both tabs live' });
    }
    await tab2.close();

    // Tom leaves: gone from Maria's list after the presence grace.
    await tom.context().close();
    await eventually(async () => {
      assert.equal((await people(maria)).tom, undefined);
      assert.equal(await maria.textContent('#people-count'), '1');
    }, { what: 'Tom gone from Maria’s list' });
  });

  test('a system notification pops up and lands in the centre, which survives a reload', async () => {
    await hub.notify({ target: 'system', level: 'warning', title: 'Maintenance at 23:00', body: 'The hub restarts for about a minute.' });
    await eventually(async () => {
      const shown = await toasts(maria);
      assert.ok(shown.some((t) => t.level === 'warning' && t.text.includes('Maintenance at 23:00')), JSON.stringify(shown));
      assert.equal(await unread(maria), 1);
    }, { what: 'the toast and unread count' });

    await hub.notify({ target: 'user:maria', level: 'success', title: 'Your export is ready', body: 'report.csv' });
    await eventually(async () => assert.equal(await unread(maria), 2), { what: 'a personal notification' });

    await maria.click('#bell');
    let items = await centre(maria);
    assert.equal(items.length, 2);
    assert.match(items[0].text, /Your export is ready/);
    assert.match(items[1].text, /Maintenance at 23:00/);
    await eventually(async () => assert.equal(await unread(maria), 0), { what: 'opening the centre reads everything' });

    // History comes back from the hub after a reload, already read, and
    // does not pop up again.
    await maria.reload();
    await waitForMode(maria, 'live');
    await maria.click('#bell');
    await eventually(async () => assert.equal((await centre(maria)).length, 2), { what: 'history after reload' });
    items = await centre(maria);
    assert.ok(items.every((i) => !i.unread));
    assert.deepEqual(await toasts(maria), []);

    // Mute info pop-ups: an info notification lands in the centre only.
    await maria.uncheck('#centre input[data-level="info"]');
    await maria.click('#centre-close');
    await hub.notify({ target: 'system', level: 'info', title: 'Muted info', body: '' });
    await hub.notify({ target: 'system', level: 'error', title: 'Loud error', body: 'Queue backlog' });
    await eventually(async () => assert.ok((await toasts(maria)).some((t) => t.text.includes('Loud error'))), { what: 'the error toast' });
    assert.ok(!(await toasts(maria)).some((t) => t.text.includes('Muted info')), 'muted level: no toast');
    await maria.click('#bell');
    await eventually(async () => assert.equal((await centre(maria)).length, 4), { what: 'both in the centre' });

    // Clear all: gone, and still gone after a reload.
    await maria.click('#clear-all');
    assert.equal((await centre(maria)).length, 0);
    await maria.reload();
    await waitForMode(maria, 'live');
    await maria.click('#bell');
    await hub.notify({ target: 'system', level: 'success', title: 'After clearing', body: '' });
    await eventually(async () => {
      const after = await centre(maria);
      assert.equal(after.length, 1);
      assert.match(after[0].text, /After clearing/);
    }, { what: 'only new notifications after clear-all' });
    // The mute preference is kept too.
    assert.equal(await maria.isChecked('#centre input[data-level="info"]'), false);
    await maria.check('#centre input[data-level="info"]');
    await maria.click('#centre-close');
  });

  test('pause stops updates and resume catches up', async () => {
    await maria.click('#pause');
    await waitForMode(maria, 'paused');
    assert.equal(await maria.getAttribute('#pause', 'aria-pressed'), 'true');
    const count = await kpi(maria, 'check_in');
    const newest = (await feed(maria))[0].offset;

    await hub.postEvents([checkIn(SCOPE, 'Paula', 1), checkIn(SCOPE, 'Paula', 2)]);
    // Notifications still arrive while paused: once this one shows, the page
    // has had every chance to show the check-ins.
    await hub.notify({ target: 'system', level: 'info', title: 'Barrier', body: '' });
    await eventually(async () => assert.ok((await toasts(maria)).some((t) => t.text.includes('Barrier'))), { what: 'the barrier toast' });
    await eventually(async () => assert.equal((await hub.stats(SCOPE, reader)).counts.check_in, count + 2), { what: 'API has the check-ins' });
    assert.equal(await kpi(maria, 'check_in'), count, 'paused: the count stays');
    assert.equal((await feed(maria))[0].offset, newest, 'paused: the feed stays');

    await maria.click('#pause');
    await waitForMode(maria, 'live');
    await eventually(async () => {
      assert.equal(await kpi(maria, 'check_in'), count + 2);
      const lines = await feed(maria);
      assert.equal(lines[0].text, 'Paula checked in at gate A');
      assert.equal(lines[0].offset, newest + 2);
      assertNoGap(lines);
    }, { what: 'caught up after resume' });
  });

  test('screenshots: light and dark, desktop and phone', async () => {
    await hub.notify({ target: 'system', level: 'success', title: 'Doors are open', body: 'Check-in has started at gates A, B and C.' });
    const shots = [
      { name: 'dashboard-light', viewport: { width: 1440, height: 1000 }, colorScheme: 'light', user: 'amara', who: 'Amara Okafor' },
      { name: 'dashboard-dark', viewport: { width: 1440, height: 1000 }, colorScheme: 'dark', user: 'kenji', who: 'Kenji Sato' },
      { name: 'phone-light', viewport: { width: 390, height: 844 }, colorScheme: 'light', user: 'lucas', who: 'Lucas Meyer' },
      { name: 'phone-dark', viewport: { width: 390, height: 844 }, colorScheme: 'dark', user: 'yuki', who: 'Yuki Tanaka' },
    ];
    const pages = [];
    for (const s of shots) {
      const page = await openPage(browser, `${hub.url}/?user=${s.user}&name=${encodeURIComponent(s.who)}`, s);
      await waitForMode(page, 'live');
      pages.push(page);
    }
    // A little live traffic so highlights and the feed are in motion.
    await hub.simulate(['--scopes', SCOPE, '--count', '40', '--rate', '40', '--seed', '9', '--users', '24']);
    await hub.notify({ target: 'system', level: 'info', title: 'Poll closing soon', body: '“Best talk so far?” closes in 5 minutes.' });
    for (const [i, page] of pages.entries()) {
      await eventually(async () => {
        assert.equal((await people(page))[shots[i].user]?.status, 'online');
        assert.ok((await toasts(page)).some((t) => t.text.includes('Poll closing soon')));
      }, { what: 'page settled' });
      await page.waitForSelector('.spark path');
      await eventually(async () => assert.deepEqual(await brokenIcons(page), []), { what: 'every icon drawn from the sprite' });
      const path = await screenshot(page, shots[i].name);
      assert.ok(path.endsWith('.png'));
      assert.deepEqual(page.errors, []);
    }
  });
});
