/** Sends submitScan as a GraphQL multipart request (the spec's shape, as Apollo's and urql's clients send it). */
import http from "node:http";
import type { TestServer } from "./server.ts";

export const SUBMIT_SCAN = `mutation Submit($input: SubmitScanInput!) {
  submitScan(input: $input) { scan { id status label workspace { id } } }
}`;

export interface SubmitOptions {
  workspaceId?: string;
  label?: string;
  fileName?: string;
  headers?: Record<string, string>;
}

export function multipartBody(archive: Buffer | Blob, options: SubmitOptions = {}): FormData {
  const form = new FormData();
  form.set(
    "operations",
    JSON.stringify({
      query: SUBMIT_SCAN,
      variables: { input: { workspaceId: options.workspaceId, label: options.label, source: null } },
    }),
  );
  form.set("map", JSON.stringify({ 0: ["variables.input.source"] }));
  form.set("0", archive instanceof Blob ? archive : new Blob([new Uint8Array(archive)]), options.fileName ?? "source.zip");
  return form;
}

export async function submitScan(server: Pick<TestServer, "graphqlUrl">, token: string | undefined, archive: Buffer | Blob, options: SubmitOptions = {}) {
  const response = await fetch(server.graphqlUrl, {
    method: "POST",
    headers: {
      "apollo-require-preflight": "true",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...options.headers,
    },
    body: multipartBody(archive, options),
  });
  const text = await response.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = { raw: text };
  }
  return { status: response.status, body, code: body.errors?.[0]?.extensions?.code as string | undefined };
}

/**
 * Sends submitScan with no Content-Length (chunked): `operations` and `map`, then a file part of
 * `fileBytes` zero bytes written 64 KiB at a time, so a size limit can only be found while the body
 * streams. Writing stops as soon as the server answers (a refusal mid-stream).
 */
export function submitScanChunked(server: Pick<TestServer, "graphqlUrl">, token: string, fileBytes: number) {
  const boundary = `vega-chunked-${Date.now()}`;
  const part = (headers: string) => `--${boundary}\r\n${headers}\r\n\r\n`;
  const operations = JSON.stringify({ query: SUBMIT_SCAN, variables: { input: { source: null } } });
  const head =
    part('Content-Disposition: form-data; name="operations"') + operations + "\r\n" +
    part('Content-Disposition: form-data; name="map"') + JSON.stringify({ 0: ["variables.input.source"] }) + "\r\n" +
    part('Content-Disposition: form-data; name="0"; filename="source.zip"\r\nContent-Type: application/zip');
  return new Promise<{ status: number; body: any; code: string | undefined; sentBytes: number }>((resolve, reject) => {
    let answered = false;
    let sentBytes = 0;
    const request = http.request(server.graphqlUrl, {
      method: "POST",
      headers: { "content-type": `multipart/form-data; boundary=${boundary}`, "apollo-require-preflight": "true", authorization: `Bearer ${token}` },
    });
    request.on("response", (response) => {
      answered = true;
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (text += chunk));
      response.on("end", () => {
        let body: any;
        try {
          body = JSON.parse(text);
        } catch {
          body = { raw: text };
        }
        resolve({ status: response.statusCode!, body, code: body.errors?.[0]?.extensions?.code, sentBytes });
      });
    });
    // The server may close while bytes are still on their way: the answer, if it came, is what counts.
    request.on("error", (error) => {
      if (!answered) reject(error);
    });
    const chunk = Buffer.alloc(64 * 1024);
    const writeMore = () => {
      while (!answered && !request.destroyed && sentBytes < fileBytes) {
        const piece = chunk.subarray(0, Math.min(chunk.length, fileBytes - sentBytes));
        sentBytes += piece.length;
        if (!request.write(piece)) return void request.once("drain", writeMore);
      }
      if (!answered && !request.destroyed) request.end(`\r\n--${boundary}--\r\n`);
    };
    request.write(head);
    writeMore();
  });
}
