/**
 * `submitScan` as a GraphQL multipart request (the spec Apollo's and urql's
 * upload clients follow), streamed from the file: memory stays flat whatever
 * the archive's size, and the declared Content-Length lets the API refuse an
 * archive over its limit before reading it.
 *
 * The request says `Expect: 100-continue`, and the file is sent only once the
 * API answers `100 Continue`: an API that refuses at once (too large, no quota,
 * a bad token) answers before the body, and the refusal is read rather than
 * lost to a reset, which is what happens to a client that writes a large body
 * the server no longer reads (see ../../shared/STACK.md on undici). Like curl,
 * the file goes anyway after a second without an answer, for proxies that do
 * not pass the expectation on.
 */
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { DocumentTypeDecoration } from "@graphql-typed-document-node/core";

const CONTINUE_WAIT_MS = 1000;

export interface UploadRequest<Result, Variables> {
  graphqlUrl: string;
  token: string;
  document: DocumentTypeDecoration<Result, Variables>;
  /** The mutation's `input`, without its `source` (the file). */
  input: Record<string, unknown>;
  file: string;
  size: number;
  onProgress?: (bytesSent: number) => void;
}

export type UploadOutcome<Result> = { ok: true; data: Result } | { ok: false; status: number; code: string; message: string };

export function multipartFraming(boundary: string, operations: string, fileName: string): { head: Buffer; tail: Buffer } {
  const safeName = fileName.replace(/["\r\n\\]/g, "_");
  const head =
    `--${boundary}\r\ncontent-disposition: form-data; name="operations"\r\ncontent-type: application/json\r\n\r\n${operations}\r\n` +
    `--${boundary}\r\ncontent-disposition: form-data; name="map"\r\ncontent-type: application/json\r\n\r\n{"0":["variables.input.source"]}\r\n` +
    `--${boundary}\r\ncontent-disposition: form-data; name="0"; filename="${safeName}"\r\ncontent-type: application/zip\r\n\r\n`;
  return { head: Buffer.from(head, "utf8"), tail: Buffer.from(`\r\n--${boundary}--\r\n`, "utf8") };
}

export function uploadScan<Result, Variables>(request: UploadRequest<Result, Variables>): Promise<UploadOutcome<Result>> {
  const boundary = `vega-${randomBytes(12).toString("hex")}`;
  const operations = JSON.stringify({ query: String(request.document), variables: { input: { ...request.input, source: null } } });
  const { head, tail } = multipartFraming(boundary, operations, path.basename(request.file));
  const url = new URL(request.graphqlUrl);
  const transport = url.protocol === "https:" ? https : http;

  return new Promise((resolve, reject) => {
    const outgoing = transport.request(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${request.token}`,
        "content-type": `multipart/form-data; boundary=${boundary}`,
        "content-length": String(head.length + request.size + tail.length),
        "apollo-require-preflight": "true",
        expect: "100-continue",
      },
    });
    let bodyStarted = false;
    let answered = false;
    const file = createReadStream(request.file);
    const sendBody = () => {
      if (bodyStarted || answered) return;
      bodyStarted = true;
      clearTimeout(continueTimer);
      outgoing.write(head);
      let sent = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          sent += chunk.length;
          request.onProgress?.(sent);
          done(null, chunk);
        },
      });
      // end: false: the closing boundary follows the file.
      pipeline(file, counter, async function (source) {
        for await (const chunk of source) {
          if (!outgoing.write(chunk)) await new Promise((drained) => outgoing.once("drain", drained));
        }
        outgoing.end(tail);
      }).catch((error: unknown) => {
        // The API answered and closed while the file was still going: its answer (already read, or arriving) counts.
        if (!answered) outgoing.destroy(error as Error);
      });
    };
    const continueTimer = setTimeout(sendBody, CONTINUE_WAIT_MS);
    outgoing.on("continue", sendBody);
    outgoing.on("response", (response) => {
      answered = true;
      clearTimeout(continueTimer);
      if (!bodyStarted) file.destroy();
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () => {
        file.destroy();
        resolve(outcomeOf(response.statusCode ?? 0, Buffer.concat(chunks).toString("utf8")));
      });
    });
    outgoing.on("error", (error) => {
      clearTimeout(continueTimer);
      file.destroy();
      if (!answered) reject(new Error(`${request.graphqlUrl}: ${error.message}`));
    });
    file.on("error", (error) => {
      outgoing.destroy();
      if (!answered) reject(error);
    });
  });
}

function outcomeOf<Result>(status: number, text: string): UploadOutcome<Result> {
  let body: { data?: Result | null; errors?: Array<{ message?: string; extensions?: { code?: unknown } }> } | undefined;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const error = body?.errors?.[0];
  if (error) {
    const code = typeof error.extensions?.code === "string" ? error.extensions.code : `HTTP_${status}`;
    return { ok: false, status, code, message: error.message ?? "refused" };
  }
  if (status >= 200 && status < 300 && body?.data) return { ok: true, data: body.data };
  return { ok: false, status, code: `HTTP_${status}`, message: text.slice(0, 200) || "no answer body" };
}
