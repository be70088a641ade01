/**
 * Queue pickup on the embedded default: a real `vega serve` and a real `vega
 * worker` (local launcher, the default poll interval of
 * VEGA_WORKER_POLL_INTERVAL_SECONDS, 5 s) in child processes; small zips
 * submitted one at a time, each timed from the moment its submitScan request is
 * sent to its STARTING and SUCCEEDED changes, as a subscriber sees them
 * (scanStateChanged over graphql-ws). Before the worker's scanQueued
 * subscription, a scan waited for the next poll (about 4.9 s of 7.3 s).
 * Target: submit → STARTING p50 ≤ 100 ms.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess } from "../support/cli.ts";
import { submitScan } from "../support/uploads.ts";
import { buildZip } from "../support/zips.ts";

const SCANS = Number(process.env.BENCH_PICKUP_SCANS ?? 10);

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

export default async function benchPickup(): Promise<void> {
  const secret = randomBytes(32).toString("base64url");
  const key = new TextEncoder().encode(secret);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-pickup-"));
  const api = await startVega(
    ["serve"],
    { VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: secret, VEGA_CLEANUP_INTERVAL_SECONDS: "0", VEGA_MAX_ACTIVE_SCANS_PER_USER: "100" },
    /Vega API listening/,
    { timeoutMs: 120_000 },
  );
  let worker: Awaited<ReturnType<typeof startVega>> | undefined;
  const port = /"port":(\d+)/.exec(api.output())![1];
  const graphqlUrl = `http://127.0.0.1:${port}/graphql`;
  const user = await signToken(key, { sub: "bench-user", ttlSeconds: 3600 });
  const client = createClient({ url: graphqlUrl.replace(/^http/, "ws"), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${user}` }, lazy: false, retryAttempts: 0 });
  try {
    worker = await startVega(
      ["worker"],
      { VEGA_API_URL: graphqlUrl, VEGA_WORKER_TOKEN: await signToken(key, { sub: "bench-worker", scope: "worker", ttlSeconds: 3600 }), VEGA_LAUNCHER: "local", VEGA_WORKER_NAME: "bench" },
      /"msg":"worker registered"/,
      { timeoutMs: 120_000 },
    );
    // When each scan reached each status, on this process's clock.
    const seen = new Map<string, Map<string, number>>();
    const waiters = new Map<string, () => void>();
    client.subscribe<{ scanStateChanged: { to: string; scan: { id: string } } }>(
      { query: "subscription { scanStateChanged { to scan { id } } }" },
      {
        next: ({ data }) => {
          const { to, scan } = data!.scanStateChanged;
          if (!seen.has(scan.id)) seen.set(scan.id, new Map());
          seen.get(scan.id)!.set(to, performance.now());
          waiters.get(`${scan.id}:${to}`)?.();
        },
        error: (error) => console.error("subscription failed:", error),
        complete: () => {},
      },
    );
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the subscription and the worker's settle in
    const toStarting: number[] = [];
    const toSucceeded: number[] = [];
    const worst = { id: "", starting: 0 };
    for (let index = -1; index < SCANS; index++) {
      const archive = await buildZip([{ name: "README.md", data: `# bench ${index}\n` }, { name: "src/app.ts", data: "export const x = 1;\n" }]);
      const sent = performance.now();
      const submitted = await submitScan({ graphqlUrl }, user, archive, { label: `pickup-${index}` });
      const id = submitted.body.data?.submitScan?.scan?.id as string | undefined;
      if (!id) throw new Error(`submitScan failed: ${JSON.stringify(submitted.body)}`);
      const finished = seen.get(id)?.get("SUCCEEDED") ?? (await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`scan ${id} did not succeed within 120 s: ${JSON.stringify([...(seen.get(id) ?? [])])}`)), 120_000);
        waiters.set(`${id}:SUCCEEDED`, () => {
          clearTimeout(timer);
          resolve(seen.get(id)!.get("SUCCEEDED")!);
        });
        for (const failed of ["FAILED", "CANCELLED"]) waiters.set(`${id}:${failed}`, () => reject(new Error(`scan ${id} ${failed}`)));
      }));
      if (index < 0) continue; // the first one warms both processes up
      const starting = seen.get(id)!.get("STARTING")! - sent;
      toStarting.push(starting);
      toSucceeded.push(finished - sent);
      if (starting > worst.starting) Object.assign(worst, { id, starting });
    }
    const ms = (value: number) => `${value.toFixed(0)} ms`;
    console.log(`${SCANS} small zips one at a time (after one warm-up), worker polling every 5 s (the default) and holding scanQueued`);
    console.log(`submit → STARTING: p50 ${ms(percentile(toStarting, 50))}, max ${ms(Math.max(...toStarting))} (${toStarting.map((v) => v.toFixed(0)).join(", ")})`);
    console.log(`submit → SUCCEEDED: p50 ${ms(percentile(toSucceeded, 50))}, max ${ms(Math.max(...toSucceeded))}`);
    const p50 = percentile(toStarting, 50);
    console.log(`target submit → STARTING p50 ≤ 100 ms: ${p50 <= 100 ? "met" : "MISSED"} (${ms(p50)}); load average ${os.loadavg()[0].toFixed(1)}`);
  } finally {
    await client.dispose();
    if (worker) await stopProcess(worker.child, "SIGTERM");
    await stopProcess(api.child, "SIGTERM");
    await rm(dataDir, { recursive: true, force: true });
  }
}
