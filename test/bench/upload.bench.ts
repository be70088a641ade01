/**
 * Uploading a 1 GiB archive through submitScan, side by side with the floor:
 * the fastest plain Node HTTP servers we could write that stream the same body
 * to disk. Throughput ratio and the API process's peak RSS growth (targets:
 * ratio ≥ 0.8 of the faster plain server, growth ≤ 64 MiB and flat). Then the
 * same upload into the S3 store (s3rver in a process of its own on this
 * machine), as a ratio to the local store's, with its RSS growth.
 *
 * A fair floor: the plain servers write with Vega's 1 MiB buffer (one through a
 * 1 MiB fs.WriteStream, one gathering the socket's chunks into 1 MiB writev
 * calls), nothing is deleted inside a timed window (files go between samples,
 * untimed), every server takes one warm-up upload first, and the samples
 * interleave (each plain server, then Vega; then the next round), BENCH_UPLOAD_SAMPLES
 * (5) of each, the median reported. Vega's warm-up also takes SMALL_WARM_UPS
 * small submissions (see warmUp).
 * The servers run as child processes, measured from outside (/proc/<pid>/status
 * and /proc/<pid>/stat): besides the rates, each upload's CPU time per GiB is
 * printed for the server and for the client (this process), because on a
 * two-core machine the client and the server share the cores, so a server's
 * rate falls with its CPU time even where its threads could run side by side.
 * Two more plain servers also hash what they write with SHA-256, as Vega must
 * (the runner checks the archive against it): one on its main thread, one
 * through Vega's own upload sink (upload-file.ts). They are printed as
 * references for what the hash costs; they are not the floor of the target.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { once } from "node:events";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess } from "../support/cli.ts";
import { startS3Server } from "../support/s3.ts";

const ARCHIVE_BYTES = 1024 * 1024 * 1024;
/** Small submitScan uploads in each Vega server's warm-up (see warmUp). */
const SMALL_WARM_UPS = 100;
const SECRET = "bench-secret-bench-secret-bench-secret";

/**
 * A zip with one stored (uncompressed) entry of `size` bytes, written by hand so nothing holds it in memory.
 * Its bytes are random, like the deflated entries of a real source archive: a run of one letter would time
 * the boundary search at its worst (a letter of the boundary near its end lets a Horspool search skip 2 bytes
 * at a time, not the boundary's length), which no real archive does.
 */
async function writeStoredZip(file: string, size: number) {
  const name = Buffer.from("data/blob.bin");
  const chunk = randomBytes(8 * 1024 * 1024);
  // CRC-32 of the entry, computed once over the same chunks we write.
  const { crc32 } = await import("node:zlib");
  let crc = 0;
  const out = createWriteStream(file);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt16LE(0, 6);
  local.writeUInt16LE(0, 8); // stored
  local.writeUInt16LE(name.length, 26);
  // CRC and sizes go in a data descriptor-free layout: patch them after, so write sizes now and CRC later.
  local.writeUInt32LE(size, 18);
  local.writeUInt32LE(size, 22);
  out.write(local);
  out.write(name);
  for (let written = 0; written < size; written += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, size - written));
    crc = crc32(piece, crc);
    if (!out.write(piece)) await once(out, "drain");
  }
  const centralOffset = 30 + name.length + size;
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(0x031e, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt32LE(crc >>> 0, 16);
  central.writeUInt32LE(size, 20);
  central.writeUInt32LE(size, 24);
  central.writeUInt16LE(name.length, 28);
  central.writeUInt32LE((0o100644 << 16) >>> 0, 38);
  out.write(central);
  out.write(name);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(46 + name.length, 12);
  end.writeUInt32LE(centralOffset, 16);
  out.write(end);
  out.end();
  await once(out, "finish");
  // Patch the CRC into the local header.
  const handle = await (await import("node:fs/promises")).open(file, "r+");
  const crcBytes = Buffer.alloc(4);
  crcBytes.writeUInt32LE(crc >>> 0, 0);
  await handle.write(crcBytes, 0, 4, 14);
  await handle.close();
}

/** Samples a process's resident set size until stopped; answers the peak in bytes. */
function sampleRss(pid: number) {
  let peak = 0;
  let running = true;
  const read = async () => {
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    const match = /VmRSS:\s+(\d+) kB/.exec(status);
    if (match) peak = Math.max(peak, Number(match[1]) * 1024);
  };
  const loop = (async () => {
    while (running) {
      await read();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    current: async () => {
      await read();
      return peak;
    },
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux, whatever the kernel's own rate). */
const USER_HZ = 100;

/** The CPU time (user and system, all threads) a process has used so far, in seconds. */
async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces), from the 3rd: utime is the 14th, stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
}

interface Upload {
  status: number;
  body: string;
  seconds: number;
  /** CPU time of this process (the client) while it sent the body and read the answer. */
  clientCpuSeconds: number;
}

/** Sends the archive as a GraphQL multipart request (or a raw body) with a known Content-Length. */
async function postFile(url: string, file: string, size: number, multipart: boolean, token?: string): Promise<Upload> {
  const boundary = "----vega-bench-boundary";
  const operations = JSON.stringify({
    query: "mutation ($input: SubmitScanInput!) { submitScan(input: $input) { scan { id status } } }",
    variables: { input: { source: null } },
  });
  const head = multipart
    ? Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${operations}\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n{"0":["variables.input.source"]}\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="0"; filename="big.zip"\r\nContent-Type: application/zip\r\n\r\n`,
      )
    : Buffer.alloc(0);
  const tail = multipart ? Buffer.from(`\r\n--${boundary}--\r\n`) : Buffer.alloc(0);
  const started = process.hrtime.bigint();
  const startedCpu = process.cpuUsage();
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      {
        method: "POST",
        headers: {
          "content-length": String(head.length + size + tail.length),
          "content-type": multipart ? `multipart/form-data; boundary=${boundary}` : "application/octet-stream",
          ...(multipart ? { "apollo-require-preflight": "true", authorization: `Bearer ${token}` } : {}),
        },
      },
      (response) => {
        let body = "";
        response.on("data", (chunk) => (body += chunk));
        response.on("end", () => {
          const cpu = process.cpuUsage(startedCpu);
          resolve({
            status: response.statusCode ?? 0,
            body,
            seconds: Number(process.hrtime.bigint() - started) / 1e9,
            clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
          });
        });
      },
    );
    request.on("error", reject);
    request.write(head);
    const source = createReadStream(file, { highWaterMark: 1024 * 1024 });
    source.pipe(request, { end: false });
    source.on("end", () => request.end(tail));
  });
}

/** The socket's chunks gathered by hand into 1 MiB writev calls on a file descriptor, pausing the socket meanwhile. */
const writevServer = (hashing: boolean) => `
    const handle = await fsp.open(target, "w");
    ${hashing ? `const hash = crypto.createHash("sha256");` : ""}
    let pending = [], pendingBytes = 0, writing = Promise.resolve();
    const flush = () => { const chunks = pending; pending = []; pendingBytes = 0; writing = writing.then(() => handle.writev(chunks)); return writing; };
    for await (const chunk of req) {
      ${hashing ? "hash.update(chunk);" : ""}
      pending.push(chunk); pendingBytes += chunk.length;
      if (pendingBytes >= 1024 * 1024) await flush();
    }
    await flush(); await handle.close();
    ${hashing ? `hash.digest("hex");` : ""}`;

/** Vega's own upload sink (upload-file.ts: 1 MiB blocks, SHA-256 on a thread) behind a bare HTTP server. */
const vegaSinkServer = `
    const file = await fsp.open(target, "wx");
    try {
      const { sink, finished } = uploadFileSink(file, () => {});
      await pipeline(req, sink);
      await finished();
    } finally {
      await file.close();
    }`;

/**
 * Bare Node servers writing the request body to a file, in a process of their own: the first two are the
 * floors (the target is against the faster); the others are references that also hash, as Vega must.
 */
const PLAIN_SERVERS = {
  // Node's stream pipeline into a WriteStream with Vega's buffer size (its _writev gathers what queues up).
  "plain, pipeline": { floor: true, code: `await pipeline(req, fs.createWriteStream(target, { highWaterMark: 1024 * 1024 }));` },
  "plain, 1 MiB writev": { floor: true, code: writevServer(false) },
  "plain, 1 MiB writev + SHA-256": { floor: false, code: writevServer(true) },
  "plain HTTP + Vega's upload sink": { floor: false, code: vegaSinkServer, importsVegaSink: true },
};
type PlainKind = keyof typeof PLAIN_SERVERS;

const UPLOAD_SINK_MODULE = fileURLToPath(new URL("../../api/http/upload-file.ts", import.meta.url));

async function startPlainServer(dir: string, kind: PlainKind): Promise<{ child: ChildProcess; url: string; dir: string }> {
  const filesDir = path.join(dir, `plain-${Object.keys(PLAIN_SERVERS).indexOf(kind)}`);
  const server: { code: string; importsVegaSink?: boolean } = PLAIN_SERVERS[kind];
  const usesSink = server.importsVegaSink === true;
  const script = `${filesDir}.${usesSink ? "mts" : "mjs"}`;
  await writeFile(
    script,
    `import http from "node:http"; import crypto from "node:crypto"; import fs from "node:fs"; import fsp from "node:fs/promises"; import { pipeline } from "node:stream/promises";
     ${usesSink ? `import { uploadFileSink } from ${JSON.stringify(UPLOAD_SINK_MODULE)};` : ""}
     fs.mkdirSync(${JSON.stringify(filesDir)}, { recursive: true });
     let n = 0;
     const server = http.createServer(async (req, res) => {
       const target = ${JSON.stringify(filesDir)} + "/" + (n++) + ".bin";
       ${server.code}
       res.end("ok");
     });
     server.listen(0, "127.0.0.1", () => console.log("listening " + server.address().port));`,
  );
  // The sink's TypeScript runs through tsx, with the heap setting every vega process has (bin/vega.mjs).
  const node = usesSink ? ["--import", "tsx", "--heap-growing-percent=100"] : [];
  const child = spawn(process.execPath, [...node, script], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  return { child, url: `http://127.0.0.1:${/listening (\d+)/.exec(String(line))![1]}/`, dir: filesDir };
}

/** Removes what a server stored, between samples (untimed), so the disk holds one archive at a time. */
async function emptyDir(dir: string) {
  for (const entry of await readdir(dir).catch(() => [])) await rm(path.join(dir, entry), { recursive: true, force: true });
}

/** One timed upload: its rate and the CPU time per GiB of the server and of the client. */
interface Sample {
  rate: number;
  serverCpuPerGiB: number;
  clientCpuPerGiB: number;
}

/** Runs `upload` against the server process `pid` (`label` in an error), which must answer 200 without GraphQL errors. */
async function timedUpload(label: string, pid: number, size: number, upload: () => Promise<Upload>): Promise<Sample> {
  const serverCpu = await processCpuSeconds(pid);
  const run = await upload();
  const serverCpuAfter = await processCpuSeconds(pid);
  if (run.status !== 200 || run.body.includes('"errors"')) throw new Error(`${label} failed: ${run.status} ${run.body}`);
  const gib = size / 2 ** 30;
  return { rate: size / 2 ** 20 / run.seconds, serverCpuPerGiB: (serverCpuAfter - serverCpu) / gib, clientCpuPerGiB: run.clientCpuSeconds / gib };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

export default async function benchUpload(): Promise<void> {
  const samples = Number(process.env.BENCH_UPLOAD_SAMPLES ?? 5);
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-upload-"));
  const archive = path.join(dir, "big.zip");
  try {
    await writeStoredZip(archive, ARCHIVE_BYTES);
    const { size } = await stat(archive);
    const smallArchive = path.join(dir, "small.zip");
    await writeStoredZip(smallArchive, 4096);
    const { size: smallSize } = await stat(smallArchive);
    console.log(`archive: ${(size / 2 ** 30).toFixed(2)} GiB, one stored entry; ${samples} samples of each server, interleaved, after one warm-up upload each (and ${SMALL_WARM_UPS} small submissions for Vega)`);

    const plains = await Promise.all(
      (Object.keys(PLAIN_SERVERS) as PlainKind[]).map(async (kind) => ({ kind, ...PLAIN_SERVERS[kind], ...(await startPlainServer(dir, kind)), samples: [] as Sample[] })),
    );
    const vega = await startVegaForUploads(dir, "local", {});
    const vegaSamples: Sample[] = [];
    const growths: number[] = [];
    const befores: number[] = [];
    try {
      for (const plain of plains) {
        await postFile(plain.url, archive, size, false); // warm-up (and the archive into the page cache)
        await emptyDir(plain.dir);
      }
      await vega.submit(archive, size);
      await vega.warmUp(smallArchive, smallSize);
      await vega.empty();
      for (let sample = 0; sample < samples; sample++) {
        for (const plain of plains) {
          plain.samples.push(await timedUpload(plain.kind, plain.child.pid!, size, () => postFile(plain.url, archive, size, false)));
          await emptyDir(plain.dir);
        }
        const run = await vega.submit(archive, size);
        vegaSamples.push(run.sample);
        growths.push(run.growthMiB);
        befores.push(run.beforeMiB);
        await vega.empty();
      }
    } finally {
      await vega.stop();
      for (const plain of plains) await stopProcess(plain.child);
    }

    const s3 = await startS3Server("vega-bench");
    let remote: VegaRun;
    try {
      const vegaS3 = await startVegaForUploads(dir, "s3", s3.env("bench/artifacts"));
      try {
        await vegaS3.warmUp(smallArchive, smallSize);
        remote = await vegaS3.submit(archive, size);
      } finally {
        await vegaS3.stop();
      }
      // The object must hold the archive's bytes, not only the SDK's word for it.
      const sizes = (await s3.keys("bench/artifacts/sources/")).map((object) => object.size);
      if (!sizes.includes(size)) throw new Error(`no S3 object holds the archive's ${size} bytes (sizes: ${sizes.join(", ")})`);
    } finally {
      await s3.stop();
    }

    const rateOf = (samples: Sample[]) => median(samples.map((sample) => sample.rate));
    const serverCpuOf = (samples: Sample[]) => median(samples.map((sample) => sample.serverCpuPerGiB));
    const clientCpuOf = (samples: Sample[]) => median(samples.map((sample) => sample.clientCpuPerGiB));
    const describe = (samples: Sample[]) =>
      `median ${rateOf(samples).toFixed(0)} MiB/s (${samples.map((sample) => sample.rate.toFixed(0)).join(", ")}); ` +
      `CPU per GiB: server ${serverCpuOf(samples).toFixed(2)} s, client ${clientCpuOf(samples).toFixed(2)} s (medians)`;
    for (const plain of plains) console.log(`${plain.kind}${plain.floor ? "" : " (reference, not a floor)"} → disk: ${describe(plain.samples)}`);
    console.log(`submitScan into the local store (stream, hash, inspect, store): ${describe(vegaSamples)}`);
    const fastestOf = (servers: typeof plains) => servers.reduce((best, plain) => (rateOf(plain.samples) > rateOf(best.samples) ? plain : best));
    const fastest = fastestOf(plains.filter((plain) => plain.floor));
    const hashing = fastestOf(plains.filter((plain) => !plain.floor));
    const vegaMedian = rateOf(vegaSamples);
    const remoteRate = remote.sample.rate;
    console.log(`submitScan into the S3 store (s3rver on this machine, one sample): ${remoteRate.toFixed(0)} MiB/s`);
    const ratio = vegaMedian / rateOf(fastest.samples);
    console.log(`throughput ratio (submitScan local / the faster plain server, medians): ${ratio.toFixed(2)}; target ≥ 0.8: ${ratio >= 0.8 ? "met" : "MISSED"}`);
    console.log(
      `server CPU per GiB, submitScan local / ${fastest.kind}: ${(serverCpuOf(vegaSamples) / serverCpuOf(fastest.samples)).toFixed(1)}×; ` +
        `the faster hashing reference (${hashing.kind}) / ${fastest.kind}: ${(rateOf(hashing.samples) / rateOf(fastest.samples)).toFixed(2)}; ` +
        `submitScan local / that reference: ${(vegaMedian / rateOf(hashing.samples)).toFixed(2)}`,
    );
    console.log(`throughput ratio (submitScan S3 / submitScan local): ${(remoteRate / vegaMedian).toFixed(2)}`);
    const maxGrowth = Math.max(...growths);
    console.log(
      `API peak RSS growth per upload, local store: ${growths.map((growth) => growth.toFixed(1)).join(", ")} MiB ` +
        `(each over the RSS just before it: ${befores.map((before) => before.toFixed(0)).join(", ")} MiB); S3 store: ${remote.growthMiB.toFixed(1)} MiB; ` +
        `target ≤ 64 MiB and flat: ${maxGrowth <= 64 && remote.growthMiB <= 64 ? "met" : "MISSED"}`,
    );
    console.log(`load average ${os.loadavg()[0].toFixed(1)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface VegaRun {
  sample: Sample;
  /** Peak RSS during the upload, over the RSS just before it. */
  growthMiB: number;
  beforeMiB: number;
}

/** One `vega serve` of its own (with `env` on top), ready for submitScan uploads, each timed with its peak RSS growth. */
async function startVegaForUploads(dir: string, store: "local" | "s3", env: Record<string, string>) {
  const dataDir = path.join(dir, `vega-data-${store}`);
  const { child, output } = await startVega(
    ["serve"],
    {
      VEGA_DATA_DIR: dataDir,
      VEGA_PORT: "0",
      VEGA_HOST: "127.0.0.1",
      VEGA_JWT_SECRET: SECRET,
      VEGA_CLEANUP_INTERVAL_SECONDS: "0",
      VEGA_MAX_ACTIVE_SCANS_PER_USER: "1000",
      ...env,
    },
    /Vega API listening/,
    { timeoutMs: 300_000 },
  );
  const port = Number(/"port":(\d+)/.exec(output())![1]);
  const token = await signToken(new TextEncoder().encode(SECRET), { sub: "bench", ttlSeconds: 3600 });
  const url = `http://127.0.0.1:${port}/graphql`;
  // One small request first, so that the first upload meets a warmed-up server.
  await fetch(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: '{"query":"{ viewer { id } }"}' });
  const server = {
    async submit(archive: string, size: number): Promise<VegaRun> {
      // Growth is counted from the RSS just before this upload: the server's RSS falls after its first uploads
      // (913 MiB after one request, ~510 MiB later, on this machine), so a baseline taken once at the start read
      // as negative growth.
      const rss = sampleRss(child.pid!);
      const before = await rss.current();
      let peak: number;
      let sample: Sample;
      try {
        sample = await timedUpload(`submitScan (${store})`, child.pid!, size, () => postFile(url, archive, size, true, token));
      } finally {
        peak = await rss.stop();
      }
      return { sample, growthMiB: (peak - before) / 2 ** 20, beforeMiB: before / 2 ** 20 };
    },
    /**
     * SMALL_WARM_UPS submissions of a small archive, so the submission path is warm too. After one warm-up
     * upload alone, V8's four background threads still used ~0.35 s of CPU each during each of the first timed
     * uploads, on a machine whose two cores the upload already fills (compiling or marking: not told apart);
     * after these, ~0.03 s each.
     */
    async warmUp(smallArchive: string, smallSize: number) {
      for (let count = 0; count < SMALL_WARM_UPS; count++) await server.submit(smallArchive, smallSize);
    },
    /** Removes the stored archives (the queued scans stay, pointing at nothing: no worker runs here). */
    empty: () => emptyDir(path.join(dataDir, "artifacts", "sources")),
    async stop() {
      await stopProcess(child);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}
