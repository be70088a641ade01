/**
 * Hostile and broken multipart uploads against a real `vega serve` process:
 * each gets a clear 4xx with a code (or, for a client that went away, nothing),
 * and afterwards the server is untouched, holds no more descriptors than
 * before and has nothing left in the artifact store's tmp/.
 */
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServeProcess, type ServeProcess } from "../support/serve-process.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";
import { multipartBody, SUBMIT_SCAN } from "../support/uploads.ts";
import { buildZip } from "../support/zips.ts";

const KiB = 1024;
const MiB = 1024 * 1024;

let archive: Buffer;
beforeAll(async () => {
  archive = await buildZip([{ name: "src/index.ts", data: "export const answer = 42;\n" }]);
});

/** Posts a multipart form through Node's fetch, as Apollo's and urql's upload clients do. */
async function postForm(server: ServeProcess, token: string, form: FormData) {
  const response = await fetch(server.graphqlUrl, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "apollo-require-preflight": "true" },
    body: form,
  });
  const body = await response.json();
  return { status: response.status, body, code: body.errors?.[0]?.extensions?.code as string | undefined };
}

function form(operations: unknown, map: unknown, files: Record<string, Buffer> = { 0: Buffer.alloc(0) }) {
  const data = new FormData();
  data.set("operations", JSON.stringify(operations));
  data.set("map", JSON.stringify(map));
  for (const [name, bytes] of Object.entries(files)) data.set(name, new Blob([new Uint8Array(bytes)]), "source.zip");
  return data;
}

const submitOperations = (input: Record<string, unknown> = { source: null }) => ({ query: SUBMIT_SCAN, variables: { input } });

async function scanCount(server: ServeProcess, token: string) {
  const response = await fetch(server.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: "{ scans(first: 100) { edges { node { id } } } }" }),
  });
  return ((await response.json()).data.scans.edges as unknown[]).length;
}

/** Polls until `check` holds, for conditions no event announces (a descriptor closing in another process). */
async function eventually<T>(read: () => Promise<T> | T, check: (value: T) => boolean, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (check(value) || Date.now() > deadline) return value;
    await sleep(200);
  }
}

describe("the multipart map may only walk the operation's own JSON", () => {
  let server: ServeProcess;
  beforeAll(async () => {
    server = await startServeProcess();
  }, 200_000);
  afterAll(async () => {
    if (server) await expectServerStillUntouched(server);
    await server?.stop();
  });

  it.each([
    ["variables.__proto__.zzz", /"variables\.__proto__\.zzz" walks into "__proto__"/],
    ["variables.constructor.prototype.zzz", /walks into "constructor"/],
    ["variables.input.prototype", /walks into "prototype"/],
    ["variables.input.label.length", /names nothing in the operation's variables \(at "length"\)/],
    ["variables.input.file", /names nothing in the operation's variables \(at "file"\)/],
    ["variables.input.workspace.id", /names nothing in the operation's variables \(at "workspace"\)/],
    ["variables.input.label", /must point at a null/],
    ["operations.query", /must point inside variables/],
  ])("refuses the path %s with 400 BAD_USER_INPUT naming it, storing nothing", async (path, message) => {
    const token = await server.token("mallory");
    const response = await postForm(
      server,
      token,
      form(submitOperations({ source: null, label: "x" }), { 0: [path] }, { 0: archive }),
    );
    expect(response.status).toBe(400);
    expect(response.code).toBe("BAD_USER_INPUT");
    expect(response.body.errors[0].message).toMatch(message);
    expect(response.body.errors[0].extensions.path).toBe(path);
    expect(await scanCount(server, token)).toBe(0);
    expect(await server.uploadTemporaries()).toEqual([]);
    await expectServerUntouched(server);
  });

  it("refuses a map that is not an object of path lists, and a file part the map does not name", async () => {
    const token = await server.token("mallory");
    for (const map of [["variables.input.source"], { 0: "variables.input.source" }, { 0: [] }, { 0: [7] }, null]) {
      const response = await postForm(server, token, form(submitOperations(), map, { 0: archive }));
      expect([response.status, response.code], JSON.stringify(map)).toEqual([400, "BAD_USER_INPUT"]);
    }
    const unnamed = await postForm(server, token, form(submitOperations(), { 0: ["variables.input.source"] }, { 1: archive }));
    expect([unnamed.status, unnamed.code]).toEqual([400, "BAD_USER_INPUT"]);
    expect(unnamed.body.errors[0].message).toMatch(/file part `1` is not named in `map`/);
    await expectServerUntouched(server);
  });

  it("refuses a multipart body without a boundary, with a second file, or with a part that has no name: 400, nothing stored", async () => {
    const token = await server.token("mallory");
    const boundary = "vega-hostile";
    const part = (disposition: string, body: string | Buffer) =>
      Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`), Buffer.from(body), Buffer.from("\r\n")]);
    const head = [part('form-data; name="operations"', JSON.stringify(submitOperations())), part('form-data; name="map"', JSON.stringify({ 0: ["variables.input.source"] }))];
    const file = (name: string) => part(`form-data; name="${name}"; filename="source.zip"`, archive);
    const end = Buffer.from(`--${boundary}--\r\n`);
    const cases: [string, string, Buffer, RegExp][] = [
      ["no boundary", "multipart/form-data", Buffer.concat([...head, file("0"), end]), /no valid boundary/],
      ["a second file", `multipart/form-data; boundary=${boundary}`, Buffer.concat([...head, file("0"), file("1"), end]), /1 file part\(s\) at most/],
      ["a part without a name", `multipart/form-data; boundary=${boundary}`, Buffer.concat([...head, part("form-data", "x"), file("0"), end]), /has no `name`/],
      ["no closing boundary", `multipart/form-data; boundary=${boundary}`, Buffer.concat([...head, file("0")]), /ends before its closing boundary/],
      // The first refusal (operations not JSON) is the answer, whatever the rest of the body holds.
      [
        "a bad field, then a file and a bad boundary line",
        `multipart/form-data; boundary=${boundary}`,
        Buffer.concat([part('form-data; name="operations"', "not json"), head[1], file("0"), Buffer.from(`--${boundary}xyz\r\n`)]),
        /`operations` is not valid JSON/,
      ],
    ];
    for (const [name, contentType, body, message] of cases) {
      const response = await fetch(server.graphqlUrl, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "apollo-require-preflight": "true", "content-type": contentType },
        body: new Uint8Array(body),
      });
      const answer = await response.json();
      expect([response.status, answer.errors?.[0]?.extensions?.code], name).toEqual([400, "BAD_USER_INPUT"]);
      expect(answer.errors[0].message, name).toMatch(message);
    }
    expect(await scanCount(server, token)).toBe(0);
    expect(await server.uploadTemporaries()).toEqual([]);
    await expectServerUntouched(server);
  });

  it("answers 400 BAD_USER_INPUT to a request whose map names a file it never sends", async () => {
    const token = await server.token("mallory");
    const data = new FormData();
    data.set("operations", JSON.stringify(submitOperations()));
    data.set("map", JSON.stringify({ 0: ["variables.input.source"] }));
    const response = await postForm(server, token, data);
    expect([response.status, response.code]).toEqual([400, "BAD_USER_INPUT"]);
    expect(response.body.errors[0].message).toMatch(/names the file part `0`, but the request has no such file part/);
    await expectServerUntouched(server);
  });

  it("refuses batched operations and operations sent twice", async () => {
    const token = await server.token("mallory");
    const batch = await postForm(server, token, form([submitOperations()], { 0: ["0.variables.input.source"] }, { 0: archive }));
    expect([batch.status, batch.code]).toEqual([400, "BAD_USER_INPUT"]);
    const twice = new FormData();
    twice.append("operations", JSON.stringify(submitOperations()));
    twice.append("operations", JSON.stringify({ query: "{ viewer { id } }", variables: {} }));
    twice.append("map", JSON.stringify({ 0: ["variables.input.source"] }));
    const response = await postForm(server, token, twice);
    expect([response.status, response.code]).toEqual([400, "BAD_USER_INPUT"]);
    await expectServerUntouched(server);
  });

  it("still accepts the spec's own shape afterwards, arrays of variables included", async () => {
    const token = await server.token("alice");
    const response = await postForm(server, token, form(submitOperations(), { 0: ["variables.input.source"] }, { 0: archive }));
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.submitScan.scan.status).toBe("QUEUED");
  });
});

describe("a refused upload is readable by every client", () => {
  let server: ServeProcess;
  let token: string;
  const tries = 15;
  beforeAll(async () => {
    server = await startServeProcess({ VEGA_MAX_SOURCE_BYTES: String(200 * KiB) });
    token = await server.token("alice");
  }, 200_000);
  afterAll(async () => {
    if (server) await expectServerStillUntouched(server);
    await server?.stop();
  });

  const big = Buffer.alloc(50 * MiB, 7);

  async function readRefusal(body: BodyInit, headers: Record<string, string>) {
    try {
      const response = await fetch(server.graphqlUrl, { method: "POST", headers, body, duplex: "half" } as RequestInit);
      const json = await response.json();
      return `${response.status} ${json.errors?.[0]?.extensions?.code}`;
    } catch (error) {
      return `client error ${(error as { cause?: { code?: string } }).cause?.code ?? String(error)}`;
    }
  }

  it(`reads 413 SOURCE_TOO_LARGE ${tries} times of ${tries} for a declared 50 MB body over a 200 KB limit`, async () => {
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < tries; attempt++) {
      outcomes.push(await readRefusal(multipartBody(big), { authorization: `Bearer ${token}`, "apollo-require-preflight": "true" }));
    }
    expect(outcomes).toEqual(Array(tries).fill("413 SOURCE_TOO_LARGE"));
    await expectServerUntouched(server);
  }, 300_000);

  it(`reads 413 SOURCE_TOO_LARGE ${tries} times of ${tries} for a 50 MB body streamed without a length, cut at the limit`, async () => {
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < tries; attempt++) {
      const streamed = new Response(multipartBody(big));
      outcomes.push(
        await readRefusal(streamed.body!, {
          authorization: `Bearer ${token}`,
          "apollo-require-preflight": "true",
          "content-type": streamed.headers.get("content-type")!,
        }),
      );
    }
    expect(outcomes).toEqual(Array(tries).fill("413 SOURCE_TOO_LARGE"));
    expect(await server.uploadTemporaries()).toEqual([]);
    await expectServerUntouched(server);
  }, 300_000);

  it(`reads 413 PAYLOAD_TOO_LARGE ${tries} times of ${tries} for a 50 MB JSON body`, async () => {
    const body = JSON.stringify({ query: "{ viewer { id } }", variables: { padding: "x".repeat(50 * MiB) } });
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < tries; attempt++) {
      outcomes.push(await readRefusal(body, { authorization: `Bearer ${token}`, "content-type": "application/json" }));
    }
    expect(outcomes).toEqual(Array(tries).fill("413 PAYLOAD_TOO_LARGE"));
    await expectServerUntouched(server);
  }, 300_000);

  /** A request with `Expect: 100-continue`: resolves with whether 100 came, and the final status and code. */
  function expectContinue(headers: Record<string, string | number>, body: Buffer) {
    return new Promise<{ continued: boolean; status: number; code?: string }>((resolve, reject) => {
      let continued = false;
      const request = httpRequest(server.graphqlUrl, { method: "POST", headers: { ...headers, expect: "100-continue", "content-length": body.length } });
      request.on("continue", () => {
        continued = true;
        request.end(body);
      });
      request.on("response", async (response) => {
        let text = "";
        for await (const chunk of response) text += chunk;
        resolve({ continued, status: response.statusCode!, code: JSON.parse(text).errors?.[0]?.extensions?.code });
        request.destroy();
      });
      request.on("error", reject);
      request.flushHeaders();
    });
  }

  it("answers `Expect: 100-continue` with 413 before the body when the declared length is over the limit", async () => {
    const upload = new Response(multipartBody(big));
    const contentType = upload.headers.get("content-type")!;
    const body = Buffer.from(await upload.arrayBuffer());
    const refused = await expectContinue(
      { authorization: `Bearer ${token}`, "apollo-require-preflight": "true", "content-type": contentType },
      body,
    );
    expect(refused).toEqual({ continued: false, status: 413, code: "SOURCE_TOO_LARGE" });
    const anonymous = await expectContinue({ "apollo-require-preflight": "true", "content-type": contentType }, body);
    expect(anonymous).toEqual({ continued: false, status: 401, code: "UNAUTHENTICATED" });
    await expectServerUntouched(server);
  }, 120_000);

  it("answers `Expect: 100-continue` with 100 for an upload within the limit, and takes it", async () => {
    const upload = new Response(multipartBody(archive));
    const accepted = await expectContinue(
      { authorization: `Bearer ${token}`, "apollo-require-preflight": "true", "content-type": upload.headers.get("content-type")! },
      Buffer.from(await upload.arrayBuffer()),
    );
    expect(accepted).toEqual({ continued: true, status: 200, code: undefined });
  });
});

describe("an upload the client abandons leaves nothing behind", () => {
  let server: ServeProcess;
  const declaredBytes = 100 * MiB;
  beforeAll(async () => {
    server = await startServeProcess({ VEGA_UPLOAD_IDLE_SECONDS: "1", VEGA_MAX_ACTIVE_SCANS_PER_USER: "1000" });
  }, 200_000);
  afterAll(async () => {
    if (server) await expectServerStillUntouched(server);
    await server?.stop();
  });

  type Abort = "fin" | "rst" | "stall";

  /**
   * Sends the head of a 100 MB upload over a raw socket, then `sentBytes` of
   * its body (the operations and map parts, then the file), then goes away:
   * a FIN, a RST, or silence until the server cuts it. Resolves with what the
   * client read back.
   */
  async function abandonUpload(token: string, sentBytes: number, abort: Abort): Promise<string> {
    const boundary = "vega-abandoned-upload";
    const preamble =
      `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${JSON.stringify(submitOperations())}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n${JSON.stringify({ 0: ["variables.input.source"] })}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="0"; filename="source.zip"\r\nContent-Type: application/zip\r\n\r\n`;
    const { port } = new URL(server.url);
    const socket = net.connect(Number(port), "127.0.0.1");
    await once(socket, "connect");
    let answer = "";
    socket.on("data", (chunk) => (answer += chunk));
    socket.on("error", () => {});
    const closed = once(socket, "close");
    socket.write(
      `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\nApollo-Require-Preflight: true\r\n` +
        `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${declaredBytes}\r\n\r\n`,
    );
    const body = Buffer.concat([Buffer.from(preamble), Buffer.alloc(Math.max(0, sentBytes - preamble.length), 1)]).subarray(0, sentBytes);
    for (let offset = 0; offset < body.length; offset += 256 * KiB) {
      if (!socket.write(body.subarray(offset, offset + 256 * KiB))) await once(socket, "drain");
    }
    if (abort === "fin") socket.end();
    else if (abort === "rst") {
      // Let the bytes reach the server before the reset discards what its kernel has not read yet.
      await sleep(20);
      socket.resetAndDestroy();
    }
    await closed;
    return answer;
  }

  /** The server's descriptors by kind, and its memory, for the record (no thresholds on memory). */
  function measure() {
    const fds = server.openFds();
    const kinds = {
      sockets: fds.filter((target) => target.startsWith("socket:")).length,
      database: fds.filter((target) => target.startsWith(`${server.dataDir}/pglite`)).length,
      uploads: fds.filter((target) => target.includes("/artifacts/")).length,
    };
    return { fds: fds.length, ...kinds, rssMB: Math.round(server.rssBytes() / MiB) };
  }

  /**
   * The embedded database opens its relation files as queries first touch
   * them and keeps them open, as PostgreSQL does; the baseline is taken once
   * every path an upload takes has run, so that only what uploads hold shows.
   */
  async function warmUp(token: string) {
    const accepted = await postForm(server, token, form(submitOperations(), { 0: ["variables.input.source"] }, { 0: archive }));
    expect(accepted.body.errors).toBeUndefined();
    for (const abort of ["fin", "rst", "stall"] as const) await abandonUpload(token, 100 * KiB, abort);
    await expectServerUntouched(server);
  }

  it("closes and removes the partial file of 200 uploads abandoned at any byte (FIN, RST or a stall)", async () => {
    const token = await server.token("quitter");
    await warmUp(token);
    const before = measure();
    const aborts: Abort[] = ["fin", "rst", "stall"];
    const answers: { abort: Abort; answer: string }[] = [];
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, index) => {
          const attempt = batch * 20 + index;
          const abort = aborts[attempt % aborts.length];
          // Every region of the body: nothing, inside the operations and map parts, just past them, deep in the file.
          const sentBytes = [0, 37, 300, 700, 64 * KiB, 1 * MiB + attempt * 997][attempt % 6];
          answers.push({ abort, answer: await abandonUpload(token, sentBytes, abort) });
        }),
      );
    }
    const tmp = await eventually(() => server.uploadTemporaries(), (files) => files.length === 0);
    const after = await eventually(measure, (now) => now.fds <= before.fds + 5);
    console.log(`200 abandoned uploads: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}, files in tmp/ ${tmp.length}`);
    expect(tmp).toEqual([]);
    expect(after.uploads).toBe(0);
    expect(after.fds).toBeLessThanOrEqual(before.fds + 5);
    for (const { answer } of answers.filter(({ abort }) => abort === "stall")) {
      expect(answer).toMatch(/^HTTP\/1\.1 408 /);
      expect(answer).toContain('"code":"REQUEST_TIMEOUT"');
    }
    expect(await scanCount(server, token)).toBe(1);
    await expectServerUntouched(server);
  }, 600_000);

  it("frees half of a 100 MB upload at once when the client leaves (FIN or RST)", async () => {
    const token = await server.token("quitter");
    const before = measure();
    for (const abort of ["fin", "rst"] as const) await abandonUpload(token, 50 * MiB, abort);
    const tmp = await eventually(() => server.uploadTemporaries(), (files) => files.length === 0);
    const after = await eventually(measure, (now) => now.fds <= before.fds + 5);
    console.log(`two 50 MB halves: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}, files in tmp/ ${tmp.length}`);
    expect(tmp).toEqual([]);
    expect(after.uploads).toBe(0);
    expect(after.fds).toBeLessThanOrEqual(before.fds + 5);
    await expectServerUntouched(server);
  }, 300_000);
});
