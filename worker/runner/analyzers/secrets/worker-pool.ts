/**
 * Parallelism: scanning batches of files on the calling thread and on worker
 * threads, all taking batches from one queue.
 *
 * - scanTree scans on up to `concurrency` threads (default
 *   os.availableParallelism()), all taking batches of files from one queue: the
 *   calling thread, which starts at once, and `concurrency - 1` worker threads
 *   when, START_WORKERS_AFTER_MS into the scan, the rest of it looks long enough
 *   to repay their start-up (about half a CPU-second each) and the machine has a
 *   core to spare; see scanBatches. `scanOnCallingThread: false` leaves the calling thread
 *   out and starts `concurrency` workers at once. The worker entry point is this
 *   module's source, loaded through tsx's loader when it is a .ts file (it is
 *   under bin/vega.mjs too: its bundle keeps each module's own URL).
 */
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { scanBatch, type CandidateFile, type FileBatchResult } from "./batch.ts";

/** About what a worker takes to start (tsx and esbuild load in it); measured here, 0.5 to 0.9 s. */
const WORKER_START_UP_MS = 500;
/** The share of a core the calling thread must have had meanwhile for workers to start. */
const MIN_CPU_SHARE_FOR_WORKERS = 0.8;

const WORKER_ROLE = "vega-secrets-scanner";

interface ScannerWorkerData {
  role: typeof WORKER_ROLE;
  moduleUrl: string;
  /** tsx's ESM API, when this module is TypeScript source. */
  tsxApiUrl: string | null;
}

type ScannerRequest = { files: CandidateFile[]; maxFileBytes: number };
type ScannerResponse = { ok: true; result: FileBatchResult } | { ok: false; error: string };

// An eval'd CommonJS bootstrap: it registers tsx's loader when this module is
// TypeScript source (vitest and `tsx` load it through their own hooks, which a
// worker thread does not inherit), then imports this module, which serves.
const WORKER_BOOTSTRAP = `
const { workerData } = require("node:worker_threads");
(workerData.tsxApiUrl ? import(workerData.tsxApiUrl).then((tsx) => tsx.register()) : Promise.resolve())
  .then(() => import(workerData.moduleUrl));
`;


function serveScanRequests(): void {
  const port = parentPort;
  if (!port) return;
  port.on("message", (request: ScannerRequest) => {
    let response: ScannerResponse;
    try {
      response = { ok: true, result: scanBatch(request.files, request.maxFileBytes) };
    } catch (error) {
      response = { ok: false, error: error instanceof Error ? error.message : String(error) };
    }
    port.postMessage(response);
  });
  port.postMessage("ready");
}

if (!isMainThread && (workerData as Partial<ScannerWorkerData> | null)?.role === WORKER_ROLE) serveScanRequests();

/**
 * Scans the batches on the calling thread and, for long scans, on worker
 * threads too, all taking the next batch from one queue. A worker costs about
 * half a CPU-second to start (tsx and esbuild load in it), so after
 * `startWorkersAfterMs` the calling thread projects the time the rest of the
 * scan will take at its pace so far, and starts workers only if that is at
 * least twice a worker's start-up, and only if it had most of a core to itself
 * meanwhile: measured here on an oversubscribed machine, starting a worker made
 * a 200 MB scan slower, not faster. `startWorkersAfterMs: 0` starts them at
 * once, as does leaving the calling thread out (`scanOnCallingThread: false`). The event loop gets a turn between batches, so the
 * runner's heartbeats, the workers' results and their requests for more go on.
 * Each batch's result goes to `onResult` as it is done; once `abandoned()`
 * answers true, no further batch is started.
 */
export async function scanBatches(
  batches: CandidateFile[][],
  maxFileBytes: number,
  plan: { workerCount: number; scanOnCallingThread: boolean; startWorkersAfterMs: number },
  onResult: (result: FileBatchResult) => void,
  abandoned: () => boolean,
): Promise<void> {
  let nextBatch = 0;
  let workerFailure: unknown = null;
  const workers: Array<{ thread: Worker; busy: boolean; release: () => void }> = [];
  const workersDone: Promise<void>[] = [];

  const startWorkers = (count: number) => {
    const moduleUrl = import.meta.url;
    const data: ScannerWorkerData = {
      role: WORKER_ROLE,
      moduleUrl,
      tsxApiUrl: moduleUrl.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : null,
    };
    for (let index = 0; index < count; index++) {
      const thread = new Worker(WORKER_BOOTSTRAP, { eval: true, workerData: data, execArgv: [] });
      const done = new Promise<void>((resolve, reject) => {
        const record = { thread, busy: false, release: resolve };
        workers.push(record);
        const sendNext = () => {
          record.busy = nextBatch < batches.length && !abandoned();
          if (!record.busy) return resolve();
          const request: ScannerRequest = { files: batches[nextBatch++], maxFileBytes };
          thread.postMessage(request);
        };
        thread.on("message", (response: ScannerResponse | "ready") => {
          if (response === "ready") return sendNext();
          if (!response.ok) return reject(new Error(`secret scanner worker failed: ${response.error}`));
          onResult(response.result);
          sendNext();
        });
        thread.once("error", reject);
        thread.once("exit", (code) => {
          if (record.busy) reject(new Error(`secret scanner worker exited with code ${code} during a batch`));
          else resolve();
        });
      });
      done.catch((error: unknown) => {
        workerFailure ??= error;
      });
      workersDone.push(done);
    }
  };

  try {
    if (!plan.scanOnCallingThread) startWorkers(plan.workerCount);
    const started = performance.now();
    const startedCpu = process.cpuUsage();
    let workersConsidered = plan.workerCount === 0;
    while (plan.scanOnCallingThread && nextBatch < batches.length && workerFailure === null && !abandoned()) {
      const elapsedMs = performance.now() - started;
      if (!workersConsidered && elapsedMs >= plan.startWorkersAfterMs) {
        workersConsidered = true;
        const remainingMs = nextBatch === 0 ? Infinity : (elapsedMs / nextBatch) * (batches.length - nextBatch);
        // On a machine whose cores are taken, a thread that got less than most
        // of a core for itself would only add the workers' start-up to the bill.
        const { user, system } = process.cpuUsage(startedCpu);
        const coreToSpare = (user + system) / 1000 >= MIN_CPU_SHARE_FOR_WORKERS * elapsedMs;
        if (plan.startWorkersAfterMs === 0 || (remainingMs >= 2 * WORKER_START_UP_MS && coreToSpare)) {
          startWorkers(Math.min(plan.workerCount, batches.length - nextBatch - 1));
        }
      }
      onResult(scanBatch(batches[nextBatch++], maxFileBytes));
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Once the calling thread has emptied the queue (or the scan is abandoned), wait
    // for the batches in flight only, not for workers still loading.
    if (nextBatch >= batches.length || abandoned()) for (const worker of workers) if (!worker.busy) worker.release();
    await Promise.all(workersDone);
  } finally {
    await Promise.all(workers.map((worker) => worker.thread.terminate()));
  }
}
