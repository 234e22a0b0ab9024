// The package's copy of the publish script is the protocol's, byte for
// byte: this fails when pkg/protocol/publish.lua changed and the package was
// not rebuilt (npm run build regenerates src/publisher/script.ts).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { createClient } from 'redis';
import { PUBLISH_SCRIPT, PUBLISH_SCRIPT_SHA1 } from 'ssegate/publisher';

import { repoRoot, startRedis, type RedisServer } from './harness.js';

const lua = readFileSync(path.join(repoRoot, 'pkg', 'protocol', 'publish.lua'));

test('PUBLISH_SCRIPT is pkg/protocol/publish.lua byte for byte', () => {
  const copy = Buffer.from(PUBLISH_SCRIPT, 'utf8');
  if (!copy.equals(lua)) {
    let at = 0;
    while (at < copy.length && at < lua.length && copy[at] === lua[at]) at++;
    assert.fail(`the embedded script differs from publish.lua at byte ${at} (${copy.length} vs ${lua.length} bytes): run npm run build`);
  }
});

test('PUBLISH_SCRIPT_SHA1 is the SHA-1 of the file', () => {
  assert.equal(PUBLISH_SCRIPT_SHA1, createHash('sha1').update(lua).digest('hex'));
});

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

test('Redis names the script by PUBLISH_SCRIPT_SHA1', async () => {
  const c = await createClient({ url: redis.url }).connect();
  try {
    assert.equal(await c.scriptLoad(PUBLISH_SCRIPT), PUBLISH_SCRIPT_SHA1);
  } finally {
    c.destroy();
  }
});
