/**
 * Uploading a 1 GiB archive through submitScan, side by side with a plain Node
 * HTTP server that streams the same body to disk: throughput ratio and the
 * API process's peak RSS growth (targets: ratio ≥ 0.5, growth ≤ 64 MiB). Then
 * the same upload into the S3 store (s3rver in a process of its own on this
 * machine), as a ratio to the local store's, with its RSS growth.
 * Both servers run as child processes, measured from outside (/proc/<pid>/status).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { once } from "node:events";
import { signToken } from "../../api/auth.ts";
import { startVega, stopProcess } from "../support/cli.ts";
import { startS3Server } from "../support/s3.ts";

const ARCHIVE_BYTES = 1024 * 1024 * 1024;
const SECRET = "bench-secret-bench-secret-bench-secret";

/** A zip with one stored (uncompressed) entry of `size` bytes, written by hand so nothing holds it in memory. */
async function writeStoredZip(file: string, size: number) {
  const name = Buffer.from("data/blob.bin");
  const chunk = Buffer.alloc(8 * 1024 * 1024, 0x61);
  // CRC-32 of `size` bytes of 'a', computed once over the same chunks we write.
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

/** Sends the archive as a GraphQL multipart request (or a raw body) with a known Content-Length. */
async function postFile(url: string, file: string, size: number, multipart: boolean, token?: string): Promise<{ status: number; body: string; seconds: number }> {
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
        response.on("end", () =>
          resolve({ status: response.statusCode ?? 0, body, seconds: Number(process.hrtime.bigint() - started) / 1e9 }),
        );
      },
    );
    request.on("error", reject);
    request.write(head);
    const source = createReadStream(file, { highWaterMark: 1024 * 1024 });
    source.pipe(request, { end: false });
    source.on("end", () => request.end(tail));
  });
}

/** The floor: a bare Node server streaming the request body to a file, in its own process. */
async function startPlainServer(dir: string): Promise<{ child: ChildProcess; url: string }> {
  const script = path.join(dir, "plain-server.mjs");
  await writeFile(
    script,
    `import http from "node:http"; import fs from "node:fs"; import { pipeline } from "node:stream/promises";
     let n = 0;
     const server = http.createServer(async (req, res) => {
       const target = ${JSON.stringify(dir)} + "/plain-" + (n++) + ".bin";
       await pipeline(req, fs.createWriteStream(target));
       fs.rmSync(target, { force: true });
       res.end("ok");
     });
     server.listen(0, "127.0.0.1", () => console.log("listening " + server.address().port));`,
  );
  const child = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  return { child, url: `http://127.0.0.1:${/listening (\d+)/.exec(String(line))![1]}/` };
}

export default async function benchUpload(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "vega-bench-upload-"));
  const archive = path.join(dir, "big.zip");
  try {
    await writeStoredZip(archive, ARCHIVE_BYTES);
    const { size } = await stat(archive);
    console.log(`archive: ${(size / 2 ** 30).toFixed(2)} GiB, one stored entry`);

    const plain = await startPlainServer(dir);
    await postFile(plain.url, archive, size, false); // warm the page cache
    const plainRun = await postFile(plain.url, archive, size, false);
    await stopProcess(plain.child);

    const local = await submitThroughVega(dir, archive, size, "local", {});
    const s3 = await startS3Server("vega-bench");
    let remote: VegaRun;
    try {
      remote = await submitThroughVega(dir, archive, size, "s3", s3.env("bench/artifacts"));
      // The object must hold the archive's bytes, not only the SDK's word for it.
      const [object] = await s3.keys("bench/artifacts/sources/");
      if (object?.size !== size) throw new Error(`the S3 object holds ${object?.size} bytes, not ${size}`);
    } finally {
      await s3.stop();
    }

    const plainRate = size / 2 ** 20 / plainRun.seconds;
    const rate = (run: VegaRun) => size / 2 ** 20 / run.seconds;
    console.log(`plain Node server → disk: ${plainRun.seconds.toFixed(2)} s, ${plainRate.toFixed(0)} MiB/s`);
    for (const run of [local, remote]) {
      console.log(`submitScan into the ${run.store} store (stream, hash, inspect, store): ${run.seconds.toFixed(2)} s, ${rate(run).toFixed(0)} MiB/s`);
    }
    console.log(`throughput ratio (submitScan local / plain): ${(rate(local) / plainRate).toFixed(2)} (target ≥ 0.5)`);
    console.log(`throughput ratio (submitScan S3 / submitScan local, s3rver on this machine): ${(rate(remote) / rate(local)).toFixed(2)}`);
    for (const run of [local, remote]) {
      console.log(
        `API peak RSS growth during the upload, ${run.store} store: ${run.growthMiB.toFixed(1)} MiB ` +
          `(baseline ${run.baselineMiB.toFixed(0)} MiB; target ≤ 64 MiB, flat in the archive's size)`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface VegaRun {
  store: "local" | "s3";
  seconds: number;
  growthMiB: number;
  baselineMiB: number;
}

/** One `vega serve` of its own (with `env` on top), one 1 GiB submitScan, its time and its peak RSS growth. */
async function submitThroughVega(dir: string, archive: string, size: number, store: VegaRun["store"], env: Record<string, string>): Promise<VegaRun> {
  const dataDir = path.join(dir, `vega-data-${store}`);
  const { child, output } = await startVega(
    ["serve"],
    { VEGA_DATA_DIR: dataDir, VEGA_PORT: "0", VEGA_HOST: "127.0.0.1", VEGA_JWT_SECRET: SECRET, VEGA_CLEANUP_INTERVAL_SECONDS: "0", ...env },
    /Vega API listening/,
    { timeoutMs: 300_000 },
  );
  try {
    const port = Number(/"port":(\d+)/.exec(output())![1]);
    const token = await signToken(new TextEncoder().encode(SECRET), { sub: "bench", ttlSeconds: 3600 });
    const url = `http://127.0.0.1:${port}/graphql`;
    // One small request first, so the baseline RSS includes a warmed-up server.
    await fetch(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: '{"query":"{ viewer { id } }"}' });
    const rss = sampleRss(child.pid!);
    const baseline = await rss.current();
    const run = await postFile(url, archive, size, true, token);
    const peak = await rss.stop();
    if (run.status !== 200 || run.body.includes('"errors"')) throw new Error(`submitScan (${store}) failed: ${run.status} ${run.body}`);
    return { store, seconds: run.seconds, growthMiB: (peak - baseline) / 2 ** 20, baselineMiB: baseline / 2 ** 20 };
  } finally {
    await stopProcess(child);
    await rm(dataDir, { recursive: true, force: true });
  }
}
