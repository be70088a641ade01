/** Sends submitScan as a GraphQL multipart request (the spec's shape, as Apollo's and urql's clients send it). */
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
