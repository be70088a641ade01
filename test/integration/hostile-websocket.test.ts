/**
 * Oversized and silent WebSocket clients against a real `vega serve` process:
 * a frame over VEGA_MAX_REQUEST_BYTES is refused from its header (close 1009)
 * without being buffered, a socket that never sends connection_init is closed,
 * and afterwards the server is untouched and real subscribers still work.
 */
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startServeProcess, type ServeProcess } from "../support/serve-process.ts";
import { expectServerStillUntouched, expectServerUntouched } from "../support/untouched.ts";
import { connectWs } from "../support/ws.ts";

const MiB = 1024 * 1024;

let server: ServeProcess;
beforeAll(async () => {
  server = await startServeProcess();
}, 200_000);
afterAll(async () => {
  if (server) await expectServerStillUntouched(server);
  await server?.stop();
});

/**
 * An anonymous raw client speaking graphql-ws's subprotocol: sends `frame` as
 * soon as it is open, and answers (once the frame is on its way) how the
 * server will have closed it.
 */
async function openAndSend(frame: string | undefined) {
  // An all-zero mask makes the client's masking of a 90 MB frame a no-op (ws skips it), so the frame leaves at
  // once even on a loaded machine, inside the 3 s an open socket has for connection_init; on the wire it is the
  // same masked frame.
  const socket = new WebSocket(server.wsUrl, "graphql-transport-ws", { generateMask: (mask) => void mask.fill(0) });
  socket.on("error", () => {});
  const closed = once(socket, "close") as Promise<[number, Buffer]>;
  await once(socket, "open");
  if (frame !== undefined) socket.send(frame);
  return { closed: closed.then(([code, reason]) => ({ code, reason: reason.toString() })) };
}

const sendFrame = async (frame: string | undefined) => (await openAndSend(frame)).closed;

const connectionInit = (payloadBytes: number) => JSON.stringify({ type: "connection_init", payload: { padding: "x".repeat(payloadBytes) } });

/** VmRSS now, and VmHWM: the most the process ever held, which a buffered 90 MB frame would have raised. */
const memory = () => `RSS ${Math.round(server.rssBytes() / MiB)} MB (peak ${Math.round(server.peakRssBytes() / MiB)} MB)`;

describe("a WebSocket frame over VEGA_MAX_REQUEST_BYTES", () => {
  it("closes an anonymous 90 MB connection_init with 1009 before buffering it, and four at once", async () => {
    const frame = connectionInit(90 * MiB);
    const before = memory();
    expect(await sendFrame(frame)).toMatchObject({ code: 1009 });
    const afterOne = memory();
    // Four sockets, each sending its 90 MB frame as soon as it is open: the four frames are in flight at once.
    const inFlight = [];
    for (let socket = 0; socket < 4; socket++) inFlight.push((await openAndSend(frame)).closed);
    const four = await Promise.all(inFlight);
    expect(four.map(({ code }) => code)).toEqual([1009, 1009, 1009, 1009]);
    const afterFour = memory();
    console.log(`90 MB connection_init frames: server ${before} before, ${afterOne} after one, ${afterFour} after four more at once`);
    await expectServerUntouched(server);
  }, 180_000);

  it("still takes a connection_init within the limit (and asks it for a token)", async () => {
    expect(await sendFrame(connectionInit(512 * 1024))).toEqual({
      code: 4401,
      reason: 'Unauthorized: connection_init must carry { authorization: "Bearer <token>" }',
    });
  });

  it("serves an authenticated subscriber on the same server afterwards", async () => {
    await sendFrame(connectionInit(90 * MiB));
    const operator = await server.token("ops", { groups: ["vega-ops"] });
    const connection = connectWs(server.wsUrl, operator);
    try {
      const events = connection.subscribe<{ workerHeartbeats: { kind: string; worker: { name: string } } }>(
        "subscription { workerHeartbeats { kind worker { name } } }",
      );
      // The subscription has no acknowledgement: a worker registers until the subscriber hears of it.
      const deployment = await server.token("fleet", { scope: "worker" });
      for (let attempt = 1; ; attempt++) {
        await fetch(server.graphqlUrl, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${deployment}` },
          body: JSON.stringify({
            query: `mutation { registerWorker(input: { name: "after-the-flood-${attempt}", host: "h", pid: 1, version: "1", capacity: 1 }) { worker { id } } }`,
          }),
        });
        const heard = await events.next({ timeoutMs: 1000 }).catch(() => undefined);
        if (heard) {
          expect(heard.workerHeartbeats).toMatchObject({ kind: "REGISTERED", worker: { name: expect.stringMatching(/^after-the-flood-/) } });
          break;
        }
        if (attempt >= 30) throw new Error("the subscriber never heard a registration");
      }
    } finally {
      await connection.dispose();
    }
    await expectServerUntouched(server);
  }, 120_000);
});

describe("a WebSocket that never sends connection_init", () => {
  it("is closed with 4408 after graphql-ws's wait", async () => {
    expect(await sendFrame(undefined)).toEqual({ code: 4408, reason: "Connection initialisation timeout" });
    await expectServerUntouched(server);
  }, 60_000);
});
