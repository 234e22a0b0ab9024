// The package as a user gets it: `npm pack` the built dist/, install the
// tarball into a fresh project outside the repository, compile a program
// against the shipped .d.ts with a strict tsconfig, and run it against a
// real redis-server and gateway: it publishes a job with ssegate/publisher
// and follows it with watchReport.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { assertOnceInOrder, pkgRoot, startGateway, startRedis, type Gateway, type RedisServer } from './harness.js';

const dirs: string[] = [];
let redis: RedisServer | undefined;
let gw: Gateway | undefined;

after(async () => {
  await gw?.stop();
  await redis?.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Ran { code: number; stdout: string; all: string }

/** Runs cmd to its end (killed after timeoutMs); rejects only when it could not start or timed out. */
function run(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<Ran> {
  // Not the npm_* variables of an enclosing `npm test`: they describe this package, not the consumer.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(package|lifecycle|config_local_prefix)/i.test(k)));
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      const all = `${stdout}${stderr}`;
      if (err && (err.killed || typeof err.code !== 'number')) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${all}`));
      else resolve({ code: err ? Number(err.code) : 0, stdout, all });
    });
  });
}

/** Runs cmd and returns its stdout; fails unless it exits 0. */
async function ok(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<string> {
  const r = await run(cmd, args, cwd, timeoutMs);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} exited ${r.code}:\n${r.all}`);
  return r.stdout;
}

const tsconfig = {
  compilerOptions: {
    target: 'es2022', lib: ['es2022'], types: ['node'], module: 'nodenext', moduleResolution: 'nodenext',
    strict: true, skipLibCheck: false, noEmit: false, outDir: 'out',
  },
  files: ['main.ts'],
};

// What a user writes: publish a job and watch it in the same program.
const mainTs = `import { watchReport, type CompleteEvent, type JobEvent } from 'ssegate';
import { Publisher } from 'ssegate/publisher';
import { createClient } from 'redis';
import { EventSource } from 'eventsource';

interface Report { title: string; rows: number }

const [redisUrl, gatewayUrl, jobId] = process.argv.slice(2);
if (!redisUrl || !gatewayUrl || !jobId) throw new Error('usage: node out/main.js REDIS_URL GATEWAY_URL JOB_ID');
const steps = ['Loading data', 'Aggregating', 'Writing summary'];

const client = await createClient({ url: redisUrl }).connect();
try {
  const job = new Publisher(client).job(jobId);
  await job.register(); // before watching: an unknown job is a 404
  const watch = watchReport<Report>(jobId, { baseUrl: gatewayUrl, EventSource, includeReport: true });
  const events: { type: JobEvent<Report>['type']; id: string | undefined; step?: number }[] = [];
  watch.on('event', (e, id) => events.push(e.type === 'progress' ? { type: e.type, id, step: e.step } : { type: e.type, id }));
  await new Promise<void>((resolve, reject) => {
    watch.on('connection', (state) => { if (state === 'live') resolve(); });
    watch.done.catch(reject);
  });
  await job.status('processing');
  for (const [i, name] of steps.entries()) await job.progress({ step: i + 1, total: steps.length, name });
  const report: Report = { title: 'consumer', rows: 3 };
  await job.complete('r-consumer', report);
  const done: CompleteEvent<Report> = await watch.done;
  const rows: number | undefined = done.report?.rows;
  console.log(JSON.stringify({ events, reportId: done.reportId, report: done.report, rows }));
} finally {
  client.destroy();
}
`;

// Two mistakes the shipped types must catch, and nothing else.
const badTs = `import { watchReport } from 'ssegate';
import type { Job } from 'ssegate/publisher';

declare const job: Job;
watchReport('job-1', { baseUrl: 'http://127.0.0.1:1' }).on('status', (e) => console.log(e.percentage));
void job.progress({ step: 'x', total: 3 });
`;

test('the packed tarball installs, type-checks strictly and works in a project outside the repo', { timeout: 240_000 }, async () => {
  assert.ok(existsSync(path.join(pkgRoot, 'dist', 'index.js')), `no ${path.join(pkgRoot, 'dist')}: build first (npm run build)`);
  const packDir = await mkdtemp(path.join(os.tmpdir(), 'ssegate-pack-'));
  const consumer = await mkdtemp(path.join(os.tmpdir(), 'ssegate-consumer-'));
  dirs.push(packDir, consumer);
  // The servers start while npm works.
  const servers = (async () => {
    redis = await startRedis();
    gw = await startGateway(redis.url, ['--retry', '200ms']);
  })();
  servers.catch(() => {}); // awaited below

  // --ignore-scripts: prepack would rebuild dist/ under the other tests' feet.
  const packed = JSON.parse(await ok('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir], pkgRoot, 60_000)) as
    { filename: string; files: { path: string }[] }[];
  const [info] = packed;
  assert.ok(info, 'npm pack printed no package');
  const files = info.files.map((f) => f.path).sort();
  for (const f of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/publisher/index.js', 'dist/publisher/index.d.ts']) {
    assert.ok(files.includes(f), `${f} not in the tarball: ${files.join(' ')}`);
  }
  for (const js of files.filter((f) => f.endsWith('.js'))) {
    assert.ok(files.includes(js.replace(/\.js$/, '.d.ts')), `${js} ships without its .d.ts`);
  }
  const stray = files.filter((f) => /^(src|test|build|examples|scripts|node_modules)\//.test(f) || /(^|\/)tsconfig[^/]*\.json$/.test(f) || /(?<!\.d)\.ts$/.test(f));
  assert.deepEqual(stray, [], 'files that should not ship');
  const tarball = path.join(packDir, path.basename(info.filename));

  await writeFile(path.join(consumer, 'package.json'), JSON.stringify({ name: 'ssegate-consumer', private: true, type: 'module' }, null, 2));
  await writeFile(path.join(consumer, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  await writeFile(path.join(consumer, 'tsconfig.bad.json'), JSON.stringify({ extends: './tsconfig.json', compilerOptions: { noEmit: true }, files: ['bad.ts'] }));
  await writeFile(path.join(consumer, 'main.ts'), mainTs);
  await writeFile(path.join(consumer, 'bad.ts'), badTs);
  await ok('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball,
    'redis@5.10.0', 'eventsource@4.1.1', 'typescript@6.0.3', '@types/node@20.19.25'], consumer, 120_000);
  assert.ok(existsSync(path.join(consumer, 'node_modules', 'ssegate', 'dist', 'index.d.ts')), 'ssegate not installed in the consumer');

  const tsc = path.join(consumer, 'node_modules', '.bin', 'tsc');
  await ok(tsc, ['-p', '.'], consumer, 60_000);
  const bad = await run(tsc, ['-p', 'tsconfig.bad.json'], consumer, 60_000);
  assert.notEqual(bad.code, 0, 'bad.ts compiled');
  const codes = [...bad.all.matchAll(/^bad\.ts\(\d+,\d+\): error (TS\d+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(codes, ['TS2322', 'TS2339'], `expected exactly the two planted errors:\n${bad.all}`);

  await servers;
  assert.ok(redis && gw);
  const jobId = `consumer-${process.pid}-${Date.now()}`;
  const out = await ok(process.execPath, [path.join('out', 'main.js'), redis.url, gw.url, jobId], consumer, 30_000);
  const got = JSON.parse(out.trim().split('\n').at(-1) ?? '') as {
    events: { type: string; id?: string; step?: number }[]; reportId: string; report: unknown; rows: number;
  };
  assert.deepEqual(got.events.map((e) => e.type), ['status', 'status', 'progress', 'progress', 'progress', 'complete']);
  assert.deepEqual(got.events.flatMap((e) => (e.step === undefined ? [] : [e.step])), [1, 2, 3], 'each step once, in order');
  const ids = got.events.map((e) => e.id ?? '');
  assert.ok(ids.every((id) => id !== ''), 'every event carried its ID');
  assertOnceInOrder(ids);
  assert.equal(got.reportId, 'r-consumer');
  assert.deepEqual(got.report, { title: 'consumer', rows: 3 });
  assert.equal(got.rows, 3);
});
