// Test helpers: real processes on free loopback ports. A redis-server, the
// real cmd/gateway binary (built from this repository, or SSEGATE_GATEWAY_BIN),
// and a small HTTP proxy that can answer 502 while no gateway is up, counts
// the requests it sees and serves the built bundle to a browser.
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The typescript/ folder (tests run from build/test/). */
export const pkgRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The repository root. */
export const repoRoot = path.resolve(pkgRoot, '..');

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls cond every 20 ms until it is true or ms pass. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A child process that is killed when the test process exits. */
class Proc {
  readonly child: ChildProcess;
  readonly output: string[] = [];
  readonly exited: Promise<number | null>;

  private readonly group: boolean;

  /** group: run it in its own process group, and stop the whole group (a browser's helpers). */
  constructor(cmd: string, args: string[], env?: NodeJS.ProcessEnv, group = false) {
    this.group = group;
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, detached: group });
    this.child.stdout?.on('data', (b: Buffer) => this.output.push(b.toString()));
    this.child.stderr?.on('data', (b: Buffer) => this.output.push(b.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
    live.add(this);
    void this.exited.then(() => live.delete(this));
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.kill(signal);
    await this.exited;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.group && this.child.pid !== undefined) {
      try {
        process.kill(-this.child.pid, signal);
      } catch {
        // already gone
      }
    } else {
      this.child.kill(signal);
    }
  }
}

const live = new Set<Proc>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<RedisServer> {
  const bin = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  const port = await freePort();
  const p = new Proc(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await waitFor('redis-server', () => canConnect(port), 10_000).catch((err: unknown) => {
    throw new Error(`${String(err)}\n${p.output.join('')}`);
  });
  return { url: `redis://127.0.0.1:${port}`, port, stop: () => p.stop() };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

const built = new Map<string, string>();

/**
 * The path of a binary of cmd/NAME: $SSEGATE_<NAME>_BIN, else built once
 * with `go build` into build/bin.
 */
export function goBinary(name: 'gateway' | 'ssepub'): string {
  const fromEnv = process.env[`SSEGATE_${name.toUpperCase()}_BIN`];
  if (fromEnv) return fromEnv;
  const have = built.get(name);
  if (have) return have;
  const out = path.join(pkgRoot, 'build', 'bin', name);
  mkdirSync(path.dirname(out), { recursive: true });
  execFileSync('go', ['build', '-o', out, `./cmd/${name}`], { cwd: repoRoot, stdio: 'inherit' });
  if (!existsSync(out)) throw new Error(`go build of cmd/${name} made no binary`);
  built.set(name, out);
  return out;
}

export interface Gateway {
  url: string;
  port: number;
  output: string[];
  /** SIGTERM (drain) by default; SIGKILL for a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startGateway(redisUrl: string, extra: string[] = []): Promise<Gateway> {
  const port = await freePort();
  const p = new Proc(goBinary('gateway'), [
    '--addr', `127.0.0.1:${port}`, '--redis-url', redisUrl, '--log-level', 'warn',
    '--shutdown-grace', '200ms', '--linger', '0', ...extra,
  ]);
  const url = `http://127.0.0.1:${port}`;
  await waitFor('gateway /readyz', async () => {
    if (p.child.exitCode !== null) throw new Error(`gateway exited:\n${p.output.join('')}`);
    try {
      return (await fetch(`${url}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, 15_000);
  return { url, port, output: p.output, stop: (signal) => p.stop(signal) };
}

/** Runs cmd/ssepub (the Go publisher) and returns what it printed. */
export function ssepub(redisUrl: string, args: string[], input?: string): string {
  return execFileSync(goBinary('ssepub'), ['--redis-url', redisUrl, ...args], {
    input, encoding: 'utf8',
  }).trim();
}

/** Runs cmd/ssepub without blocking the event loop (a watch in this process goes on meanwhile). */
export function ssepubAsync(redisUrl: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(goBinary('ssepub'), ['--redis-url', redisUrl, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ssepub ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
    // ssepub reads stdin only for `--report -`: it may exit before the pipe
    // is written, and the write then fails with EPIPE, which says nothing.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

export interface ProxyRequest {
  method: string;
  url: string;
  status: number;
  at: number;
}

/**
 * A reverse proxy in front of the gateways, as a load balancer during a
 * deploy: it forwards to the current upstream, or answers 502 when there is
 * none. Paths under /static/ are served from files instead.
 */
export class Proxy {
  readonly requests: ProxyRequest[] = [];
  upstream: string | null = null;
  private readonly server: http.Server;
  private readonly statics = new Map<string, { type: string; file: string }>();
  private readonly dirs = new Map<string, string>();
  /** Called with each JSON body a test page POSTs to /__test/log. */
  onPageMessage: ((msg: unknown) => void) | null = null;
  private readonly sockets = new Set<net.Socket>();
  url = '';

  constructor() {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async listen(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
    return this;
  }

  /** Serves file at /static/name. */
  serve(name: string, file: string, type: string): void {
    this.statics.set(`/static/${name}`, { type, file });
  }

  /** Serves the files under dir at /static/prefix/…. */
  serveDir(prefix: string, dir: string): void {
    this.dirs.set(`/static/${prefix}/`, path.resolve(dir));
  }

  /** Requests to paths starting with prefix. */
  count(prefix: string): number {
    return this.requests.filter((r) => r.url.startsWith(prefix)).length;
  }

  /** Cuts every open connection (as a crashed load balancer would not, but a deploy does). */
  cutAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.cutAll();
    this.server.close();
    await once(this.server, 'close');
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const rec: ProxyRequest = { method: req.method ?? '', url: req.url ?? '', status: 0, at: Date.now() };
    this.requests.push(rec);
    const pathname = (req.url ?? '').split('?')[0] ?? '';
    if (pathname.startsWith('/__test/') || pathname === '/favicon.ico') {
      this.pageMessage(req, res, rec);
      return;
    }
    const st = this.statics.get(pathname) ?? this.fromDir(pathname);
    if (st) {
      rec.status = 200;
      res.writeHead(200, { 'content-type': st.type, 'cache-control': 'no-store' });
      res.end(readFileSync(st.file));
      return;
    }
    if (this.upstream === null) {
      rec.status = 502;
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<h1>502 Bad Gateway</h1>');
      return;
    }
    const target = new URL(req.url ?? '/', this.upstream);
    const up = http.request(target, { method: req.method, headers: req.headers }, (ures) => {
      rec.status = ures.statusCode ?? 0;
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      res.flushHeaders();
      ures.pipe(res);
      // An upstream that dies mid-answer cuts the client too, as a load
      // balancer does.
      ures.on('close', () => {
        if (!ures.complete) res.destroy();
      });
    });
    up.on('error', () => {
      rec.status = 502;
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/html' });
      res.end();
    });
    req.pipe(up);
    res.on('close', () => up.destroy());
  }

  private fromDir(pathname: string): { type: string; file: string } | undefined {
    for (const [prefix, dir] of this.dirs) {
      if (!pathname.startsWith(prefix)) continue;
      const file = path.resolve(dir, pathname.slice(prefix.length));
      if (!file.startsWith(dir + path.sep) || !existsSync(file)) return undefined;
      return { file, type: mimeTypes[path.extname(file)] ?? 'application/octet-stream' };
    }
    return undefined;
  }

  private pageMessage(req: http.IncomingMessage, res: http.ServerResponse, rec: ProxyRequest): void {
    const chunks: Buffer[] = [];
    req.on('data', (b: Buffer) => chunks.push(b));
    req.on('end', () => {
      rec.status = 204;
      res.writeHead(204).end();
      if (req.method !== 'POST' || !this.onPageMessage) return;
      try {
        this.onPageMessage(JSON.parse(Buffer.concat(chunks).toString()));
      } catch (err) {
        console.error('page message:', err);
      }
    });
  }
}

const mimeTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

export interface Browser {
  output: string[];
  stop(): Promise<void>;
}

/**
 * Opens url in a headless Chromium ($CHROMIUM_BIN, else chromium) with a
 * fresh profile. The page talks back over HTTP (see Proxy.onPageMessage), so
 * no DevTools client is needed.
 */
export async function startBrowser(url: string): Promise<Browser> {
  const bin = process.env.CHROMIUM_BIN ?? 'chromium';
  const profile = mkdtempSync(path.join(os.tmpdir(), 'ssegate-chromium-'));
  const p = new Proc(bin, [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
    '--no-default-browser-check', '--disable-extensions', '--disable-background-networking',
    `--user-data-dir=${profile}`, url,
  ], undefined, true);
  return {
    output: p.output,
    stop: async () => {
      await p.stop('SIGKILL');
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Fails unless ids are distinct and in stream order. */
export function assertOnceInOrder(ids: string[]): void {
  assert.deepEqual(ids, [...new Set(ids)], 'an event ID handed out twice');
  const sorted = [...ids].sort((a, b) => {
    const [am, as] = a.split('-').map(Number) as [number, number];
    const [bm, bs] = b.split('-').map(Number) as [number, number];
    return am - bm || as - bs;
  });
  assert.deepEqual(ids, sorted, 'event IDs out of order');
}
