/**
 * Fan-out of workerHeartbeats: graphql-ws subscribers on a real `vega serve`,
 * delivery latency of every (subscriber, event), side by side with the floor: a
 * bare `ws` server broadcasting the same JSON to as many bare ws clients.
 *
 * How it measures, on a 2-core machine:
 * - Each server runs in a child process of its own; this process holds the
 *   clients. Server and clients get a core each, and both setups are measured
 *   the same way.
 * - Events go through the real path: the workerHeartbeat mutation over HTTP
 *   (token check, row update in a transaction, publish, then the grouped
 *   fan-out: one execution of the subscription's selection per group, one
 *   `next` frame per subscriber). The floor's trigger is an HTTP POST too, and
 *   it JSON-encodes the frame once and sends it to every socket.
 * - Latency runs from the moment this process sends the trigger to the moment a
 *   client has parsed the event, on one clock (performance.now()); for Vega it
 *   therefore includes the mutation's database write before the publish.
 * - Both sides get the same warm-up: events until every subscriber has received
 *   one, then WARM_UP_EVENTS more, none of them measured.
 * - At 1,000 subscribers both servers are up at once and the measured events
 *   alternate between them (Vega's event, then the floor's, the order swapped
 *   every other event), so a load spike of the shared machine hits both. At
 *   10,000 (a client's file descriptors do not stretch to 20,000 sockets) they
 *   run one after the other.
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

const EVENT_TIMEOUT_MS = 10_000;
const CONNECT_BATCH = 50;
const WARM_UP_EVENTS = 20;
/** Measured events carry activeScans = FIRST_MEASURED + index; warm-up ones carry less. */
const FIRST_MEASURED = 1000;

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

const SUBSCRIPTION = `subscription { workerHeartbeats { kind at worker { id name activeScans draining lastHeartbeatAt stale } } }`;

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

  constructor(private readonly subscribers: number) {}

  sent(index: number) {
    this.sentAt.set(index, performance.now());
  }

  received(index: number) {
    const sent = this.sentAt.get(index);
    if (sent === undefined) return;
    if (index >= 0) this.latencies.push(performance.now() - sent);
    const count = (this.counts.get(index) ?? 0) + 1;
    this.counts.set(index, count);
    if (this.waiting?.index === index && count >= this.subscribers) this.waiting.resolve();
  }

  /** Resolves once every subscriber got event `index`, or after EVENT_TIMEOUT_MS. */
  async allOf(index: number) {
    if ((this.counts.get(index) ?? 0) >= this.subscribers) return;
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

/** One side of the comparison, connected and warmed up: `event(index)` triggers one event and resolves when all got it. */
interface Side {
  label: string;
  pid: number;
  deliveries: Deliveries;
  trigger(index: number): Promise<void>;
  close(): Promise<void>;
}

/** Measured-event index → the activeScans value the event carries; warm-up events carry FIRST_MEASURED - 1 - n. */
const valueOf = (index: number) => FIRST_MEASURED + index;

async function warmUp(side: Side, listening: () => number, subscribers: number) {
  // Events until every subscriber listens (has received one), then WARM_UP_EVENTS more.
  let warm = -1;
  for (let attempt = 0; listening() < subscribers; attempt++) {
    if (attempt === 100) throw new Error(`${side.label}: only ${listening()} of ${subscribers} subscribers listen after 100 warm-up events`);
    await side.trigger(warm--);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  for (let n = 0; n < WARM_UP_EVENTS; n++) {
    const index = warm--;
    side.deliveries.sent(index);
    await side.trigger(index);
    await side.deliveries.allOf(index);
  }
}

async function openVega(subscribers: number): Promise<Side & { mutationMs: number[] }> {
  const secret = randomBytes(32).toString("base64url");
  const key = new TextEncoder().encode(secret);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-"));
  const server = await startVega(
    ["serve"],
    {
      VEGA_DATA_DIR: dataDir,
      VEGA_PORT: "0",
      VEGA_HOST: "127.0.0.1",
      VEGA_JWT_SECRET: secret,
      VEGA_CLEANUP_INTERVAL_SECONDS: "0",
    },
    /Vega API listening/,
    { timeoutMs: 120_000 },
  );
  const clients: Client[] = [];
  const close = async () => {
    await Promise.all(clients.map((client) => client.dispose()));
    await stopProcess(server.child, "SIGTERM");
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const port = /"port":(\d+)/.exec(server.output())?.[1] ?? /listening[^\n]*:(\d+)/.exec(server.output())?.[1];
    if (!port) throw new Error(`no port in: ${server.output()}`);
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

    const deliveries = new Deliveries(subscribers);
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
    for (let batch = 0; batch < subscribers; batch += CONNECT_BATCH) {
      connected.push(...(await Promise.all(Array.from({ length: Math.min(CONNECT_BATCH, subscribers - batch) }, connect))));
    }
    for (const [subscriber, client] of connected.entries()) {
      client.subscribe<{ workerHeartbeats: { worker: { activeScans: number } } }>(
        { query: SUBSCRIPTION },
        {
          next: ({ data }) => {
            warmedUp.add(subscriber);
            deliveries.received(data!.workerHeartbeats.worker.activeScans - FIRST_MEASURED);
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
    const mutationMs: number[] = [];
    const side = {
      label: `vega (graphql-ws)`,
      pid: server.child.pid!,
      deliveries,
      mutationMs,
      async trigger(index: number) {
        const sent = performance.now();
        await gql(heartbeat, { id: registerWorker.worker.id, n: Math.max(0, valueOf(index)) }, registerWorker.token);
        if (index >= 0) mutationMs.push(performance.now() - sent);
      },
      close,
    };
    await warmUp(side, () => warmedUp.size, subscribers);
    return side;
  } catch (error) {
    await close();
    throw error;
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

const sampleEvent = () => ({
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
});

async function openFloor(subscribers: number): Promise<Side> {
  const child: ChildProcess = spawn(process.execPath, ["--input-type=module", "-e", FLOOR_SERVER], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const sockets: WebSocket[] = [];
  const close = async () => {
    for (const socket of sockets) socket.terminate();
    child.kill("SIGTERM");
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.on("data", (chunk: Buffer) => {
        const match = /floor listening (\d+)/.exec(String(chunk));
        if (match) resolve(Number(match[1]));
      });
      child.once("exit", (code) => reject(new Error(`floor server exited with ${code}`)));
    });
    const deliveries = new Deliveries(subscribers);
    const warmedUp = new Set<WebSocket>();
    for (let batch = 0; batch < subscribers; batch += CONNECT_BATCH) {
      await Promise.all(
        Array.from({ length: Math.min(CONNECT_BATCH, subscribers - batch) }, () => {
          const socket = new WebSocket(`ws://127.0.0.1:${port}`);
          sockets.push(socket);
          socket.on("message", (data) => {
            const frame = JSON.parse(String(data)) as { payload: { data: { workerHeartbeats: { worker: { activeScans: number } } } } };
            warmedUp.add(socket);
            deliveries.received(frame.payload.data.workerHeartbeats.worker.activeScans - FIRST_MEASURED);
          });
          return new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
        }),
      );
    }
    const side: Side = {
      label: "bare ws (floor)",
      pid: child.pid!,
      deliveries,
      async trigger(index: number) {
        const event = sampleEvent();
        event.data.workerHeartbeats.worker.activeScans = Math.max(0, valueOf(index));
        await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: JSON.stringify(event) });
      },
      close,
    };
    await warmUp(side, () => warmedUp.size, subscribers);
    return side;
  } catch (error) {
    await close();
    throw error;
  }
}

interface Measured {
  label: string;
  latencies: number[];
  delivered: number;
  serverCpuMsPerEvent: number;
  clientCpuMsPerEvent: number;
}

/** Measures `events` events on each side, alternating between them (the order swapped every other event). */
async function measure(sides: Side[], events: number): Promise<Measured[]> {
  const cpu = sides.map(() => ({ server: 0, client: 0 }));
  for (let index = 0; index < events; index++) {
    const order = index % 2 === 0 ? sides.map((_, at) => at) : sides.map((_, at) => sides.length - 1 - at);
    for (const at of order) {
      const side = sides[at];
      const [serverBefore, clientBefore] = [processCpuMs(side.pid), clientCpuMs()];
      side.deliveries.sent(index);
      await side.trigger(index);
      await side.deliveries.allOf(index);
      cpu[at].server += processCpuMs(side.pid) - serverBefore;
      cpu[at].client += clientCpuMs() - clientBefore;
    }
  }
  return sides.map((side, at) => ({
    label: side.label,
    latencies: side.deliveries.latencies,
    delivered: side.deliveries.delivered,
    serverCpuMsPerEvent: cpu[at].server / events,
    clientCpuMsPerEvent: cpu[at].client / events,
  }));
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

function summarize(run: Measured) {
  const sorted = [...run.latencies].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN };
}

function report(subscribers: number, events: number, [vega, floor]: Measured[], mutationMs: number[]) {
  const [v, f] = [summarize(vega), summarize(floor)];
  const expected = subscribers * events;
  const ms = (value: number) => `${value.toFixed(1)} ms`.padStart(10);
  console.log(
    `${`${subscribers} subscribers`.padEnd(20)}${"delivered".padStart(16)}${"p50".padStart(10)}${"p99".padStart(10)}${"max".padStart(10)}` +
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
  const mutation = [...mutationMs].sort((a, b) => a - b);
  console.log(
    `ratio vega/floor: p50 ${(v.p50 / f.p50).toFixed(1)}×, p99 ${(v.p99 / f.p99).toFixed(1)}×, ` +
      `server CPU/event ${(vega.serverCpuMsPerEvent / floor.serverCpuMsPerEvent).toFixed(1)}×; ` +
      `vega's include the workerHeartbeat mutation before the publish (round trip p50 ${percentile(mutation, 50).toFixed(1)} ms); ` +
      `load average ${os.loadavg()[0].toFixed(1)}`,
  );
  return { vega, floor, v, f, expected };
}

export default async function (): Promise<void> {
  const small = Number(process.env.BENCH_SUBSCRIBERS ?? 1000);
  const large = Number(process.env.BENCH_SUBSCRIBERS_LARGE ?? 10_000);
  const [smallEvents, largeEvents] = [100, 20];
  console.log(`servers in child processes, clients in this one (${os.cpus().length} cores); warm-up: every subscriber listening, then ${WARM_UP_EVENTS} events`);

  console.log(`\n${small} subscribers × ${smallEvents} events, the two servers interleaved`);
  const [vega, floor] = [await openVega(small), await openFloor(small)];
  let first;
  try {
    first = report(small, smallEvents, await measure([vega, floor], smallEvents), vega.mutationMs);
  } finally {
    await vega.close();
    await floor.close();
  }

  let second;
  if (large > 0) {
    console.log(`\n${large} subscribers × ${largeEvents} events, one server after the other`);
    const vegaLarge = await openVega(large);
    let vegaRun;
    try {
      [vegaRun] = await measure([vegaLarge], largeEvents);
    } finally {
      await vegaLarge.close();
    }
    const floorLarge = await openFloor(large);
    let floorRun;
    try {
      [floorRun] = await measure([floorLarge], largeEvents);
    } finally {
      await floorLarge.close();
    }
    second = report(large, largeEvents, [vegaRun, floorRun], vegaLarge.mutationMs);
  }

  const verdict = (met: boolean) => (met ? "met" : "MISSED");
  console.log(
    `target p99 ≤ 2× the floor at ${small} (all delivered): ${verdict(first.vega.delivered === first.expected && first.v.p99 <= 2 * first.f.p99)} ` +
      `(${(first.v.p99 / first.f.p99).toFixed(2)}×, ${first.vega.delivered}/${first.expected})`,
  );
  if (second) {
    console.log(
      `target ${large} subscribers 100% delivered: ${verdict(second.vega.delivered === second.expected)} ` +
        `(${second.vega.delivered}/${second.expected}, p99 ${second.v.p99.toFixed(1)} ms, ${(second.v.p99 / second.f.p99).toFixed(2)}× the floor's)`,
    );
  }
  console.log(
    `server CPU per event, vega/floor: ${(first.vega.serverCpuMsPerEvent / first.floor.serverCpuMsPerEvent).toFixed(1)}× at ${small}` +
      (second ? `, ${(second.vega.serverCpuMsPerEvent / second.floor.serverCpuMsPerEvent).toFixed(1)}× at ${large}` : "") +
      " (reported, no target)",
  );
}
