/**
 * Fan-out of workerHeartbeats: 1,000 graphql-ws subscribers on a real `vega
 * serve`, 100 heartbeats, delivery latency of every (subscriber, event), side by
 * side with the floor: a bare `ws` server broadcasting the same JSON to 1,000
 * bare ws clients.
 *
 * How it measures, on a 2-core machine:
 * - Each server runs in a child process of its own; this process holds the
 *   1,000 clients. Server and clients get a core each, and both setups are
 *   measured the same way.
 * - Events go through the real path: the workerHeartbeat mutation over HTTP
 *   (token check, row update in a transaction, publish, then per subscriber:
 *   execution of the subscription's selection and a graphql-ws `next` frame).
 *   The floor's trigger is an HTTP POST too, and it JSON-encodes the frame once
 *   and sends it to every socket.
 * - Latency runs from the moment this process sends the trigger to the moment a
 *   client has parsed the event, on one clock (performance.now()); for Vega it
 *   therefore includes the mutation's database write before the publish.
 * - One event at a time: the next trigger is sent once every subscriber got the
 *   previous event (or 10 s passed), so the figures are fan-out latency, not
 *   queueing behind earlier events.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess } from "../support/cli.ts";

const SUBSCRIBERS = 1000;
const EVENTS = 100;
const EVENT_TIMEOUT_MS = 10_000;
const CONNECT_BATCH = 50;
/** Measured heartbeats report activeScans = FIRST_MEASURED + index; warm-up ones report 0. */
const FIRST_MEASURED = 1000;

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

const SUBSCRIPTION = `subscription { workerHeartbeats { kind at worker { id name activeScans draining lastHeartbeatAt stale } } }`;

interface Run {
  label: string;
  latencies: number[];
  delivered: number;
  /** CPU time (user + system) over the measured events, per event: the server process's, and this (client) process's. */
  serverCpuMsPerEvent: number;
  clientCpuMsPerEvent: number;
}

/** CPU time a process has used so far (Linux /proc), in ms: steadier than latency on a shared machine. */
function processCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  const ticksPerSecond = 100; // USER_HZ on Linux
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
}

const clientCpuMs = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
};

/** Counts deliveries per event and records each latency. */
class Deliveries {
  readonly latencies: number[] = [];
  private readonly sentAt = new Map<number, number>();
  private readonly counts = new Map<number, number>();
  private waiting: { index: number; resolve: () => void } | undefined;

  sent(index: number) {
    this.sentAt.set(index, performance.now());
  }

  received(index: number) {
    const sent = this.sentAt.get(index);
    if (sent === undefined) return;
    this.latencies.push(performance.now() - sent);
    const count = (this.counts.get(index) ?? 0) + 1;
    this.counts.set(index, count);
    if (this.waiting?.index === index && count >= SUBSCRIBERS) this.waiting.resolve();
  }

  /** Resolves once every subscriber got event `index`, or after EVENT_TIMEOUT_MS. */
  async allOf(index: number) {
    if ((this.counts.get(index) ?? 0) >= SUBSCRIBERS) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, EVENT_TIMEOUT_MS);
      this.waiting = {
        index,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
    });
    this.waiting = undefined;
  }

  get delivered() {
    return this.latencies.length;
  }
}

async function measureVega(): Promise<Run & { mutationMs: number[] }> {
  const secret = randomBytes(32).toString("base64url");
  const key = new TextEncoder().encode(secret);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-"));
  const server = await startVega(
    ["serve"],
    { VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: secret, VEGA_CLEANUP_INTERVAL_SECONDS: "0" },
    /"msg":"Vega API listening"/,
    { timeoutMs: 120_000 },
  );
  const clients: Client[] = [];
  try {
    const port = /"port":(\d+)[^\n]*"msg":"Vega API listening"/.exec(server.output())![1];
    const graphqlUrl = `http://127.0.0.1:${port}/graphql`;
    const opsToken = await signToken(key, { sub: "bench-ops", groups: ["vega-ops"], ttlSeconds: 3600 });
    const workerToken = await signToken(key, { sub: "bench-worker", scope: "worker", ttlSeconds: 3600 });
    const gql = async (query: string, variables: Record<string, unknown>, token: string) => {
      const response = await fetch(graphqlUrl, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: any; errors?: unknown[] };
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body.data;
    };

    const deliveries = new Deliveries();
    const warmedUp = new Set<number>();
    // Connections open in batches: a thousand connection_inits at once are a storm no dashboard fleet makes
    // (and each first sight of a token's user is an upsert), and graphql-ws drops inits not done in 3 s.
    const connect = () =>
      new Promise<Client>((resolve, reject) => {
        const client = createClient({
          url: graphqlUrl.replace(/^http/, "ws"),
          webSocketImpl: WebSocket,
          connectionParams: { authorization: `Bearer ${opsToken}` },
          lazy: false,
          retryAttempts: 0,
          onNonLazyError: reject,
          on: { connected: () => resolve(client) },
        });
        clients.push(client);
      });
    const connected: Client[] = [];
    for (let batch = 0; batch < SUBSCRIBERS; batch += CONNECT_BATCH) {
      connected.push(...(await Promise.all(Array.from({ length: Math.min(CONNECT_BATCH, SUBSCRIBERS - batch) }, connect))));
    }
    for (const [subscriber, client] of connected.entries()) {
      client.subscribe<{ workerHeartbeats: { worker: { activeScans: number } } }>(
        { query: SUBSCRIPTION },
        {
          next: ({ data }) => {
            const activeScans = data!.workerHeartbeats.worker.activeScans;
            if (activeScans < FIRST_MEASURED) warmedUp.add(subscriber);
            else deliveries.received(activeScans - FIRST_MEASURED);
          },
          error: (error) => console.error(`subscriber ${subscriber} failed:`, error),
          complete: () => {},
        },
      );
    }

    const { registerWorker } = await gql(
      `mutation { registerWorker(input: { name: "bench", host: "bench", pid: 1, version: "1", capacity: 4 }) { token worker { id } } }`,
      {},
      workerToken,
    );
    const heartbeat = `mutation ($id: ID!, $n: Int!) { workerHeartbeat(id: $id, input: { activeScans: $n, draining: false }) { id } }`;
    const beat = (n: number) => gql(heartbeat, { id: registerWorker.worker.id, n }, registerWorker.token);

    // Warm-up (not measured): beat until every subscriber is listening, i.e. has received an event.
    for (let attempt = 0; warmedUp.size < SUBSCRIBERS; attempt++) {
      if (attempt === 100) throw new Error(`only ${warmedUp.size} of ${SUBSCRIBERS} subscribers listen after 100 warm-up beats`);
      await beat(0);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }

    const mutationMs: number[] = [];
    const [serverCpuBefore, clientCpuBefore] = [processCpuMs(server.child.pid!), clientCpuMs()];
    for (let index = 0; index < EVENTS; index++) {
      deliveries.sent(index);
      const sent = performance.now();
      await beat(FIRST_MEASURED + index);
      mutationMs.push(performance.now() - sent);
      await deliveries.allOf(index);
    }
    return {
      label: "vega (graphql-ws)",
      latencies: deliveries.latencies,
      delivered: deliveries.delivered,
      mutationMs,
      serverCpuMsPerEvent: (processCpuMs(server.child.pid!) - serverCpuBefore) / EVENTS,
      clientCpuMsPerEvent: (clientCpuMs() - clientCpuBefore) / EVENTS,
    };
  } finally {
    await Promise.all(clients.map((client) => client.dispose()));
    await stopProcess(server.child, "SIGTERM");
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** The floor: an HTTP trigger and a ws server that JSON-encodes each frame once and sends it to every socket. */
const FLOOR_SERVER = `
import { createServer } from "node:http";
import { WebSocketServer } from "ws";
const server = createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const frame = JSON.stringify({ id: "1", type: "next", payload: JSON.parse(body) });
    for (const socket of wss.clients) socket.send(frame);
    res.end("{}");
  });
});
const wss = new WebSocketServer({ server });
server.listen(0, "127.0.0.1", () => console.log("floor listening " + server.address().port));
`;

async function measureFloor(sampleEvent: object): Promise<Run> {
  const child: ChildProcess = spawn(process.execPath, ["--input-type=module", "-e", FLOOR_SERVER], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const sockets: WebSocket[] = [];
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.on("data", (chunk: Buffer) => {
        const match = /floor listening (\d+)/.exec(String(chunk));
        if (match) resolve(Number(match[1]));
      });
      child.once("exit", (code) => reject(new Error(`floor server exited with ${code}`)));
    });
    const deliveries = new Deliveries();
    await Promise.all(
      Array.from({ length: SUBSCRIBERS }, () => {
        const socket = new WebSocket(`ws://127.0.0.1:${port}`);
        sockets.push(socket);
        socket.on("message", (data) => {
          const frame = JSON.parse(String(data)) as { payload: { data: { workerHeartbeats: { worker: { activeScans: number } } } } };
          deliveries.received(frame.payload.data.workerHeartbeats.worker.activeScans - FIRST_MEASURED);
        });
        return new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
      }),
    );
    const [serverCpuBefore, clientCpuBefore] = [processCpuMs(child.pid!), clientCpuMs()];
    for (let index = 0; index < EVENTS; index++) {
      const event = structuredClone(sampleEvent) as { data: { workerHeartbeats: { worker: { activeScans: number } } } };
      event.data.workerHeartbeats.worker.activeScans = FIRST_MEASURED + index;
      deliveries.sent(index);
      await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: JSON.stringify(event) });
      await deliveries.allOf(index);
    }
    return {
      label: "bare ws (floor)",
      latencies: deliveries.latencies,
      delivered: deliveries.delivered,
      serverCpuMsPerEvent: (processCpuMs(child.pid!) - serverCpuBefore) / EVENTS,
      clientCpuMsPerEvent: (clientCpuMs() - clientCpuBefore) / EVENTS,
    };
  } finally {
    for (const socket of sockets) socket.terminate();
    child.kill("SIGTERM");
  }
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

function summarize(run: Run) {
  const sorted = [...run.latencies].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN };
}

export default async function (): Promise<void> {
  console.log(`${SUBSCRIBERS} subscribers × ${EVENTS} events; servers in child processes, clients in this one (${os.cpus().length} cores)`);
  const vega = await measureVega();
  const sample = {
    data: {
      workerHeartbeats: {
        kind: "HEARTBEAT",
        at: new Date().toISOString(),
        worker: {
          id: "00000000-0000-4000-8000-000000000000",
          name: "bench",
          activeScans: 0,
          draining: false,
          lastHeartbeatAt: new Date().toISOString(),
          stale: false,
        },
      },
    },
  };
  const floor = await measureFloor(sample);
  const [v, f] = [summarize(vega), summarize(floor)];
  const expected = SUBSCRIBERS * EVENTS;
  const ms = (value: number) => `${value.toFixed(1)} ms`.padStart(10);
  console.log(
    `${"".padEnd(20)}${"delivered".padStart(16)}${"p50".padStart(10)}${"p99".padStart(10)}${"max".padStart(10)}` +
      `${"server CPU/event".padStart(18)}${"client CPU/event".padStart(18)}`,
  );
  for (const [run, stats] of [
    [vega, v],
    [floor, f],
  ] as const) {
    console.log(
      `${run.label.padEnd(20)}${`${run.delivered}/${expected}`.padStart(16)}${ms(stats.p50)}${ms(stats.p99)}${ms(stats.max)}` +
        `${ms(run.serverCpuMsPerEvent).padStart(18)}${ms(run.clientCpuMsPerEvent).padStart(18)}`,
    );
  }
  console.log(
    `ratio vega/floor: p50 ${(v.p50 / f.p50).toFixed(1)}×, p99 ${(v.p99 / f.p99).toFixed(1)}×, ` +
      `server CPU ${(vega.serverCpuMsPerEvent / floor.serverCpuMsPerEvent).toFixed(1)}×; load average ${os.loadavg()[0].toFixed(1)}`,
  );
  const mutation = [...vega.mutationMs].sort((a, b) => a - b);
  console.log(`(vega's figures include the workerHeartbeat mutation before the publish: its round trip p50 ${percentile(mutation, 50).toFixed(1)} ms)`);
  const verdict = vega.delivered === expected && v.p99 < 250 ? "meets" : "MISSES";
  console.log(`target (all ${expected} delivered, p99 < 250 ms): ${verdict}`);
}
