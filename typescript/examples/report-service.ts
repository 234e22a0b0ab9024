// A report worker on ssegate/publisher: the seed plan's ReportService, with
// every state change published as an event of the job.
//
//   REDIS_URL=redis://127.0.0.1:6379 node build/examples/report-service.js
//
// registers a job, prints the URL to watch it at (GATEWAY_URL, default
// http://127.0.0.1:8080), and runs four simulated steps. Importing this
// module runs nothing: tests use the class.
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';

import { createClient } from 'redis';
import { Publisher } from 'ssegate/publisher';

/** A failure a step knows how to describe: a machine code, and whether a retry may help. */
export class StepError extends Error {
  override readonly name = 'StepError';

  /**
   * @param message - a human message (the event's `error`)
   * @param code - a machine code, such as `UPSTREAM_TIMEOUT`
   * @param retryable - whether running the job again may help
   */
  constructor(message: string, readonly code: string, readonly retryable: boolean) {
    super(message);
  }
}

/** One step of a report: `run` gets the results of the steps before it. */
export interface ReportStep {
  name: string;
  run(done: readonly unknown[]): Promise<unknown>;
}

/** The report of a job: the result of each step. */
export interface Report {
  reportId: string;
  results: unknown[];
}

/** Creates report jobs and runs them, publishing each one's progress. */
export class ReportService {
  /** @param publisher - where the jobs' events go */
  constructor(private readonly publisher: Publisher) {}

  /**
   * Registers a new job and returns its ID. Register first, then hand the
   * ID to the client (in the HTTP answer, say): a client that opens the
   * job's stream then always finds the job, never a 404.
   */
  async createJob(): Promise<string> {
    const jobId = `job-${randomUUID()}`;
    await this.publisher.job(jobId).register();
    return jobId;
  }

  /**
   * Runs the steps of a registered job: status processing, a progress event
   * after each step, then complete with the report. A step that throws
   * fails the job with the error's code and retryable (a {@link StepError}),
   * or INTERNAL, and the error is thrown on.
   */
  async processJob(jobId: string, steps: readonly ReportStep[]): Promise<Report> {
    const job = this.publisher.job(jobId);
    await job.status('processing');
    const results: unknown[] = [];
    try {
      for (const [i, step] of steps.entries()) {
        results.push(await step.run(results));
        await job.progress({ step: i + 1, total: steps.length, name: step.name });
      }
    } catch (err) {
      const failure = err instanceof StepError ? err : null;
      const message = err instanceof Error && err.message !== '' ? err.message : 'report failed';
      await job.fail(message, failure?.code ?? 'INTERNAL', failure?.retryable ?? false);
      throw err;
    }
    const report: Report = { reportId: `report-${jobId}`, results };
    await job.complete(report.reportId, report);
    return report;
  }
}

async function main(): Promise<void> {
  const client = await createClient({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' }).connect();
  try {
    const service = new ReportService(new Publisher(client));
    const jobId = await service.createJob();
    const gateway = process.env.GATEWAY_URL ?? 'http://127.0.0.1:8080';
    console.log(`job ${jobId}: watch ${gateway}/api/reports/${jobId}/stream?includeReport=true`);
    const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
    const step = (name: string, value: unknown): ReportStep => ({
      name,
      run: async () => {
        await pause(Number(process.env.STEP_MS ?? 1000));
        return value;
      },
    });
    const report = await service.processJob(jobId, [
      step('Loading data', { rows: 1200 }),
      step('Aggregating', { groups: 12 }),
      step('Rendering charts', { charts: 3 }),
      step('Writing summary', { words: 240 }),
    ]);
    console.log(`job ${jobId}: complete, ${report.reportId}`);
  } finally {
    client.destroy();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
