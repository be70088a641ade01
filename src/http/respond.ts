/** Small helpers for the routes that live beside yoga on the Node server. */
import type { IncomingMessage, ServerResponse } from "node:http";
import { GraphQLError } from "graphql";
import { errorCodeOf, errorCodes } from "../errors.ts";

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

export class BodyTooLargeError extends Error {}

/** Reads a request body into memory, refusing it past `limit` bytes (non-upload requests only). */
export async function readBoundedBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) throw new BodyTooLargeError();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BodyTooLargeError();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export function requestUrl(req: IncomingMessage): URL {
  return new URL(req.url ?? "/", `http://${req.headers.host ?? "localhost"}`);
}
