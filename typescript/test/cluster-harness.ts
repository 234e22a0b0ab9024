// A real Redis Cluster for tests: N masters (redis-server --cluster-enabled)
// on free loopback ports, joined with `redis-cli --cluster create`, in a
// temporary directory that stop() removes with the processes.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { createClient } from 'redis';

import { freePort, waitFor } from './harness.js';

/** One master of the cluster. */
export interface ClusterNode {
  host: string;
  port: number;
  url: string;
}

/** A running cluster. */
export interface TestCluster {
  nodes: ClusterNode[];
  /** Stops every node and removes the temporary directory. */
  stop(): Promise<void>;
}

/** The redis-cli binary ($REDIS_CLI_BIN or redis-cli on PATH), or null when there is none. */
export function redisCli(): string | null {
  const bin = process.env.REDIS_CLI_BIN ?? 'redis-cli';
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? bin : null;
}

/** Whether this is a CI run (CI set to anything but empty, 0 or false). */
export function inCI(): boolean {
  const ci = process.env.CI ?? '';
  return ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function run(bin: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${bin} ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Starts a cluster of n masters, no replicas, every slot assigned, `cluster_state:ok` on every node. */
export async function startCluster(n = 3): Promise<TestCluster> {
  const cli = redisCli();
  if (!cli) throw new Error('redis-cli not found (set REDIS_CLI_BIN)');
  const server = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ssegate-cluster-'));
  const procs: Array<{ child: ChildProcess; exited: Promise<void>; output: string[] }> = [];
  const stop = async (): Promise<void> => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exited));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    // Distinct client and bus ports (the bus port is set, not port + 10000,
    // which may be out of range or taken).
    const ports = new Set<number>();
    while (ports.size < 2 * n) ports.add(await freePort());
    const [clientPorts, busPorts] = [[...ports].slice(0, n), [...ports].slice(n)];
    const nodes = clientPorts.map((port) => ({ host: '127.0.0.1', port, url: `redis://127.0.0.1:${port}` }));
    for (const [i, node] of nodes.entries()) {
      const child = spawn(server, [
        '--port', String(node.port), '--cluster-port', String(busPorts[i]), '--bind', '127.0.0.1',
        '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${node.port}.conf`),
        '--cluster-node-timeout', '5000', '--dir', dir, '--save', '', '--appendonly', 'no',
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      const output: string[] = [];
      child.stdout?.on('data', (b: Buffer) => output.push(b.toString()));
      child.stderr?.on('data', (b: Buffer) => output.push(b.toString()));
      running.add(child);
      const exited = new Promise<void>((resolve) => child.once('exit', () => {
        running.delete(child);
        resolve();
      }));
      procs.push({ child, exited, output });
    }
    for (const [i, node] of nodes.entries()) {
      await waitFor(`cluster node ${node.port}`, async () => {
        if (procs[i]?.child.exitCode !== null) throw new Error(`redis-server exited:\n${procs[i]?.output.join('')}`);
        return canConnect(node.port);
      }, 10_000);
    }
    await run(cli, ['--cluster', 'create', ...nodes.map((x) => `${x.host}:${x.port}`), '--cluster-replicas', '0', '--cluster-yes']);
    for (const node of nodes) {
      const c = await createClient({ url: node.url }).connect();
      try {
        await waitFor(`cluster_state:ok on ${node.port}`, async () => {
          const info = await c.sendCommand<string>(['CLUSTER', 'INFO']);
          return info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${n}`) && info.includes('cluster_slots_ok:16384');
        }, 15_000);
      } finally {
        c.destroy();
      }
    }
    return { nodes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
