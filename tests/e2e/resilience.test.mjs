// The dashboard when things go wrong: the hub restarts, or WebSocket is
// blocked between the browser and the hub.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launch, openPage } from './lib/browser.mjs';
import { checkIn, Hub } from './lib/hub.mjs';
import { assertNoGap, connText, eventually, feed, kpi, toasts, waitForMode } from './lib/page.mjs';

const SCOPE = 'demo';
let hub;
let browser;
let reader;

before(async () => {
  hub = await Hub.start();
  await hub.postEvents(Array.from({ length: 5 }, (_, i) => checkIn(SCOPE, 'Early', i)));
  reader = await hub.token('e2e-reader', 'Reader');
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.destroy();
});

describe('resilience', { timeout: 300_000 }, () => {
  test('a hub restart shows "reconnecting", then live again with no feed gap', async () => {
    const page = await openPage(browser, `${hub.url}/?user=rita&name=Rita`);
    await waitForMode(page, 'live');
    await eventually(async () => assert.equal((await feed(page)).length, 5), { what: 'first feed' });

    await hub.stop();
    await waitForMode(page, 'reconnecting');
    await eventually(async () => assert.match(await connText(page), /^Reconnecting in \d+ s$/), { what: 'the countdown' });

    // Same port, same database. Events posted right away land while the
    // page is still waiting for its next attempt: it must get them through
    // `since` on resubscribe, without a gap or a duplicate.
    await hub.spawn();
    await hub.postEvents(Array.from({ length: 3 }, (_, i) => checkIn(SCOPE, 'During', i)));
    await waitForMode(page, 'live', 60_000);
    await hub.postEvents(Array.from({ length: 2 }, (_, i) => checkIn(SCOPE, 'After', i)));

    await eventually(async () => {
      const lines = await feed(page);
      assert.equal(lines.length, 10);
      assert.deepEqual(lines.map((l) => l.offset), [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
      assertNoGap(lines);
      assert.equal(await kpi(page, 'check_in'), 10);
    }, { what: 'all ten events, in order, once' });
    assert.ok(page.errors.every((e) => /WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)), page.errors.join('\n'));
    await page.context().close();
  });

  test('with WebSocket blocked the page polls, still updates, and goes back to WebSocket', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    let blocked = true;
    let refused = 0;
    // Every /ws handshake fails while `blocked`, as behind a proxy that drops
    // upgrades; otherwise it goes through to the real hub.
    await context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
      if (blocked) {
        refused += 1;
        ws.close({ code: 1011, reason: 'blocked by the test' });
      } else {
        ws.connectToServer();
      }
    });
    const page = await openPage(browser, `${hub.url}/?user=paul&name=Paul`, { context });
    await waitForMode(page, 'polling');
    assert.match(await connText(page), /Polling/);
    assert.ok(refused >= 2, `WebSocket was tried (${refused} attempts)`);

    // Numbers and feed over HTTP.
    await eventually(async () => {
      const api = await hub.stats(SCOPE, reader);
      assert.equal(await kpi(page, 'check_in'), api.counts.check_in);
      assert.equal((await feed(page))[0].offset, (await hub.history(`feed:${SCOPE}`, reader, '?limit=1')).offset);
    }, { what: 'polled numbers' });

    // A new event arrives through the long-poll.
    const before = await kpi(page, 'check_in');
    await hub.postEvents([checkIn(SCOPE, 'Polly', 1)]);
    await eventually(async () => {
      assert.equal((await feed(page))[0].text, 'Polly checked in at gate A');
      assert.equal(await kpi(page, 'check_in'), before + 1);
      assertNoGap(await feed(page));
    }, { what: 'the event while polling' });
    assert.equal(await page.getAttribute('#conn', 'data-mode'), 'polling');

    // Notifications are polled too.
    await hub.notify({ target: 'system', level: 'warning', title: 'Polled warning', body: '' });
    await eventually(async () => assert.ok((await toasts(page)).some((t) => t.text.includes('Polled warning'))), { what: 'the polled toast' });

    // WebSocket works again: the page notices in the background and switches back.
    blocked = false;
    await waitForMode(page, 'live', 60_000);
    await hub.postEvents([checkIn(SCOPE, 'Wes', 1)]);
    await eventually(async () => {
      const lines = await feed(page);
      assert.equal(lines[0].text, 'Wes checked in at gate A');
      assertNoGap(lines);
      assert.equal(await kpi(page, 'check_in'), before + 2);
    }, { what: 'live again' });
    await context.close();
  });
});
