// The dashboard's own files (static/), read from disk; no hub, no browser.
// Icons come from the sprite static/icons.svg: emoji and dingbats render
// differently per OS and as empty boxes where no emoji font is installed.
// (Emoji that services send in their events are theirs and still show.)

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const STATIC = resolve(dirname(fileURLToPath(import.meta.url)), '../../static');

const files = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));

// Pictographs, characters shown as emoji by default, the Dingbats block
// (✕ ✔ ✨ …) and the emoji variation selector.
const EMOJI = /[\p{Extended_Pictographic}\p{Emoji_Presentation}\u{2700}-\u{27BF}\u{FE0F}]/u;

test('static/ has no emoji or dingbats', () => {
  const found = [];
  for (const file of files(STATIC)) {
    readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
      const m = line.match(EMOJI);
      if (m) found.push(`${relative(STATIC, file)}:${i + 1}: U+${m[0].codePointAt(0).toString(16).toUpperCase()} in ${line.trim().slice(0, 80)}`);
    });
  }
  assert.deepEqual(found, [], 'use an icon of static/icons.svg instead');
});

test('every icon the markup and the kinds refer to is a symbol of the sprite', async () => {
  const sprite = readFileSync(join(STATIC, 'icons.svg'), 'utf8');
  const symbols = new Set([...sprite.matchAll(/<symbol id="([^"]+)"/g)].map((m) => m[1]));
  const wanted = [...readFileSync(join(STATIC, 'index.html'), 'utf8').matchAll(/icons\.svg#([\w-]+)/g)].map((m) => m[1]);
  const { iconOf, KIND_ORDER } = await import(join(STATIC, 'js/sentences.js'));
  wanted.push(...[...KIND_ORDER, 'some.unknown_kind'].map(iconOf));
  assert.deepEqual(wanted.filter((name) => !symbols.has(name)), []);
});
