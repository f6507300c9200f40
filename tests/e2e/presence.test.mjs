// Presence as the dashboard shows it: online, idle after the hub's idle
// time without activity, and online again on the person's next input.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launch, openPage } from './lib/browser.mjs';
import { Hub } from './lib/hub.mjs';
import { eventually, people, waitForMode } from './lib/page.mjs';

let hub;
let browser;

before(async () => {
  hub = await Hub.start({ PULSEHUB_IDLE_SECS: '2' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.destroy();
});

describe('presence', { timeout: 180_000 }, () => {
  test('idle without activity, online again on input', async () => {
    const ann = await openPage(browser, `${hub.url}/?user=ann&name=Ann`);
    const bo = await openPage(browser, `${hub.url}/?user=bo&name=Bo`);
    await waitForMode(ann, 'live');
    await waitForMode(bo, 'live');
    await eventually(async () => assert.ok(['online', 'idle'].includes((await people(ann)).bo?.status)), { what: 'Bo listed' });
    await eventually(async () => assert.equal((await people(ann)).bo?.status, 'idle'), { what: 'Bo idle' });
    assert.match((await people(ann)).bo.meta, /idle · 1 tab/);
    await eventually(async () => assert.equal((await people(bo)).bo?.status, 'idle'), { what: 'Bo sees himself idle' });
    await bo.mouse.click(700, 500);
    await eventually(async () => assert.equal((await people(ann)).bo?.status, 'online'), { what: 'Bo online again' });
  });
});
