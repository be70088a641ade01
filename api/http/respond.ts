/** Small helpers for the routes that live beside yoga on the Node server, and for reading request bodies. */
import type { IncomingMessage, ServerResponse } from "node:http";
import { GraphQLError } from "graphql";
import { errorCodeOf, errorCodes } from "../../shared/errors.ts";

/**
 * Lingering close, as nginx does it (lingering_time, lingering_timeout): a
 * client refused while it is still sending its body keeps sending, and if the
 * server closed at once the kernel would answer its next bytes with a reset,
 * so that most clients (Node's fetch among them) report EPIPE and never read
 * the refusal. The refusal is answered, then the rest of the body is read and
 * discarded, for at most this long, this long without a byte, and this much.
 */
const LINGER_SECONDS = 30;
const LINGER_IDLE_SECONDS = 5;
const LINGER_MAX_BYTES = 256 * 1024 * 1024;

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = JSON.stringify(body, (_key, value) => (typeof value === "bigint" ? value.toString() : value));
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", ...headers });
  res.end(text);
}

/** Answers a client-facing error in the GraphQL response shape, with its HTTP status. */
export function sendError(res: ServerResponse, error: GraphQLError) {
  const code = errorCodeOf(error) ?? "INTERNAL_SERVER_ERROR";
  sendJson(res, errorCodes[code].status, { errors: [{ message: error.message, extensions: error.extensions }] });
}

/** Writes a fetch Response (from yoga) to Node's response, streaming its body (SSE included). */
export async function sendWebResponse(res: ServerResponse, response: Response) {
  const headers: Record<string, string | string[]> = {};
  response.headers.forEach((value, name) => {
    if (name === "set-cookie") return;
    headers[name] = value;
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) headers["set-cookie"] = cookies;
  res.writeHead(response.status, response.statusText, headers);
  if (!response.body) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  // A client that goes away (an SSE subscriber closing its tab) must release the stream.
  const onClose = () => void reader.cancel().catch(() => {});
  res.once("close", onClose);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!res.write(value)) await new Promise<void>((resolve) => res.once("drain", resolve));
    }
  } catch {
    // the client disconnected mid-stream; nothing left to send
  } finally {
    res.off("close", onClose);
    res.end();
  }
}

/** Requests whose `Expect: 100-continue` was answered: their client is sending the body. */
const continued = new WeakSet<IncomingMessage>();

const awaitsContinue = (req: IncomingMessage) => /\b100-continue\b/i.test(req.headers.expect ?? "") && !continued.has(req);

/**
 * Called just before a body is read. A client that sent `Expect: 100-continue`
 * waits for this before sending its body, so every refusal that comes earlier
 * (a token, a quota, a declared size) is answered before a byte of it is sent.
 */
export function startReadingBody(req: IncomingMessage, res: ServerResponse) {
  if (awaitsContinue(req)) {
    continued.add(req);
    res.writeContinue();
  }
}

/**
 * Answers a refusal of a request whose body may not have been read: a client
 * still waiting for 100 Continue sends no body, so the connection is closed at
 * once; any other gets the answer and lingers (see LINGER_SECONDS) while the
 * rest of its body is read and discarded, after which the connection is
 * usable again.
 */
export function refuseRequest(req: IncomingMessage, res: ServerResponse, error: GraphQLError) {
  if (awaitsContinue(req)) {
    res.setHeader("connection", "close");
    return sendError(res, error);
  }
  sendError(res, error);
  discardRestOfBody(req);
}

/** Answers an error and closes the connection: for a client that stopped sending, whose socket is worth nothing more. */
export function refuseAndClose(res: ServerResponse, error: GraphQLError) {
  res.setHeader("connection", "close");
  sendError(res, error);
}

function discardRestOfBody(req: IncomingMessage) {
  if (req.complete || req.destroyed) return;
  let discarded = 0;
  const stop = () => {
    clearTimeout(total);
    clearTimeout(idle);
    req.off("data", onData);
  };
  const cut = () => {
    stop();
    req.socket.destroy();
  };
  const total = setTimeout(cut, LINGER_SECONDS * 1000).unref();
  const idle = setTimeout(cut, LINGER_IDLE_SECONDS * 1000).unref();
  const onData = (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > LINGER_MAX_BYTES) cut();
    else idle.refresh();
  };
  req.on("data", onData);
  req.once("end", stop);
  req.once("close", stop);
  req.resume();
}

/**
 * Calls `onIdle` once the client has sent no byte for `idleSeconds` while the
 * server was ready to read. Time the request spends paused by the server's own
 * backpressure (a slow disk, a database check) is not the client's and does
 * not count. Answers a function that stops the watch.
 */
export function watchBodyIdle(req: IncomingMessage, idleSeconds: number, onIdle: () => void): () => void {
  const idleMs = idleSeconds * 1000;
  let lastByteAt = Date.now();
  const onData = () => {
    lastByteAt = Date.now();
  };
  const timer = setInterval(
    () => {
      if (req.readableFlowing === false || req.readableLength > 0) lastByteAt = Date.now();
      else if (Date.now() - lastByteAt >= idleMs) {
        stop();
        onIdle();
      }
    },
    Math.min(1000, idleMs / 4),
  ).unref();
  const stop = () => {
    clearInterval(timer);
    req.off("data", onData);
  };
  req.on("data", onData);
  return stop;
}

export class BodyTooLargeError extends Error {}
export class BodyIdleError extends Error {}
/** The client went away before its body was complete: there is nobody left to answer. */
export class ClientGoneError extends Error {}

/**
 * Reads a request body into memory (non-upload requests only), refusing it
 * past `limit` bytes, declared or sent, and cutting it when the client stalls.
 */
export function readBoundedBody(
  req: IncomingMessage,
  res: ServerResponse,
  { limit, idleSeconds }: { limit: number; idleSeconds: number },
): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLargeError());
  if (req.destroyed && !req.complete) return Promise.reject(new ClientGoneError());
  startReadingBody(req, res);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (error?: Error) => {
      stopIdleWatch();
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return settle(new BodyTooLargeError());
      chunks.push(chunk);
    };
    const onEnd = () => settle();
    const onClose = () => {
      if (!req.complete) settle(new ClientGoneError());
    };
    const stopIdleWatch = watchBodyIdle(req, idleSeconds, () => settle(new BodyIdleError()));
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("close", onClose);
  });
}

export function requestUrl(req: IncomingMessage): URL {
  return new URL(req.url ?? "/", `http://${req.headers.host ?? "localhost"}`);
}
