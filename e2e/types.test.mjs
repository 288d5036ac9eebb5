// The TypeScript declarations (js/firetower.d.ts) compile against a program
// that uses the client both ways, and reject misuse: each @ts-expect-error
// in types/usage.ts fails the compile if the declarations let it through.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import path from 'node:path';
import {E2E} from './helpers.mjs';

test('firetower.d.ts type-checks real use and refuses misuse', () => {
  const tsc = path.join(E2E, 'node_modules', '.bin', 'tsc');
  const r = spawnSync(tsc, ['-p', path.join(E2E, 'types')], {encoding: 'utf8'});
  assert.equal(r.error, undefined, `running tsc: ${r.error}`);
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});
