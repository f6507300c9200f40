// Getting a token outside demo mode: from the URL, or pasted into the form.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { launch, openPage } from './lib/browser.mjs';
import { BIN, Hub, JWT_SECRET } from './lib/hub.mjs';
import { waitForMode } from './lib/page.mjs';

let hub;
let browser;

/** A browser token from `pulsehub token`, as an application's backend would mint it. */
const mint = (user, name, ttl = 3600, secret = JWT_SECRET) =>
  execFileSync(BIN, ['token', '--user', user, '--name', name, '--scopes', 'demo,acme', `--ttl=${ttl}`, '--secret', secret]).toString().trim();

before(async () => {
  hub = await Hub.start({ PULSEHUB_DEMO: 'false' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.destroy();
});

describe('tokens without demo mode', { timeout: 180_000 }, () => {
  test('the dev token endpoint is off', async () => {
    assert.equal((await hub.request('GET', '/api/dev/token')).status, 404);
  });

  test('?token= signs in and leaves the address bar', async () => {
    const page = await openPage(browser, `${hub.url}/?token=${mint('ann', 'Ann Lee')}&scope=acme`);
    await waitForMode(page, 'live');
    assert.equal(await page.textContent('#me'), 'Ann Lee');
    assert.equal(new URL(page.url()).searchParams.get('token'), null);
    // Both scopes of the token, `acme` chosen by the URL.
    assert.deepEqual(await page.$$eval('#scope option', (o) => o.map((x) => x.value)), ['demo', 'acme']);
    assert.equal(await page.inputValue('#scope'), 'acme');
    // A reload keeps the token.
    await page.reload();
    await waitForMode(page, 'live');
    assert.equal(await page.textContent('#me'), 'Ann Lee');
    await page.context().close();
  });

  test('without a token the page asks for one', async () => {
    const page = await openPage(browser, `${hub.url}/?token=${mint('old', 'Old', -60)}`);
    await page.waitForSelector('#token-dialog[open]');
    assert.match(await page.textContent('#token-reason'), /expired/);

    await page.fill('#token-input', 'not a token');
    await page.click('#token-dialog button[type=submit]');
    await page.waitForFunction(() => /does not look like/.test(document.querySelector('#token-reason').textContent));
    await page.waitForSelector('#token-dialog[open]');

    await page.fill('#token-input', mint('bo', 'Bo Chen'));
    await page.click('#token-dialog button[type=submit]');
    await waitForMode(page, 'live');
    assert.equal(await page.textContent('#me'), 'Bo Chen');
    assert.equal(await page.isVisible('#token-dialog'), false);
    await page.context().close();
  });

  test('a token about to expire: a banner, then the form once it has expired, then live again', async () => {
    const page = await openPage(browser, `${hub.url}/?token=${mint('cy', 'Cy Park', 15)}`);
    await waitForMode(page, 'live');
    // Renewed a fifth of its lifetime before `exp`: nobody to ask but the person.
    await page.waitForSelector('#banner:not([hidden])', { timeout: 15_000 });
    assert.match(await page.textContent('#banner'), /expires soon/);
    // Not answered: the hub closes the connection when the token expires.
    await page.waitForSelector('#token-dialog[open]', { timeout: 15_000 });
    assert.match(await page.textContent('#token-reason'), /expired/);
    assert.equal(await page.getAttribute('#conn', 'data-mode'), 'auth');
    assert.equal(await page.textContent('#conn-text'), 'Needs a token');
    assert.equal(await page.isVisible('#banner'), false);

    await page.fill('#token-input', mint('cy', 'Cy Park'));
    await page.click('#token-dialog button[type=submit]');
    await waitForMode(page, 'live');
    assert.equal(await page.isVisible('#token-dialog'), false);
    assert.equal(await page.textContent('#me'), 'Cy Park');
    await page.context().close();
  });

  test('a token the hub refuses: the form says so, and a working token connects', async () => {
    // Well formed and unexpired, but signed with another secret: only the hub can tell.
    const page = await openPage(browser, `${hub.url}/?token=${mint('di', 'Di Ross', 3600, 'not-the-hub-secret-0123')}`);
    await page.waitForSelector('#token-dialog[open]');
    assert.match(await page.textContent('#token-reason'), /refused/);
    assert.equal(await page.getAttribute('#conn', 'data-mode'), 'auth');

    await page.fill('#token-input', mint('di', 'Di Ross'));
    await page.click('#token-dialog button[type=submit]');
    await waitForMode(page, 'live');
    assert.equal(await page.textContent('#me'), 'Di Ross');
    await page.context().close();
  });
});
