/**
 * A real S3 server for tests (s3rver from npm, in a process of the test's on an
 * ephemeral port), the settings that point Vega at it, and a client to look at
 * what is stored. s3rver accepts the SDK's signatures with its fixed keys
 * (S3RVER/S3RVER); it needs path-style addressing.
 */
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { startCommand, stopProcess } from "./cli.ts";

const main = fileURLToPath(new URL("./s3rver-main.cjs", import.meta.url));

export const S3_TEST_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
export const S3_TEST_REGION = "us-east-1";

export interface S3Server {
  child: ChildProcess;
  pid: number;
  endpoint: string;
  bucket: string;
  /** The environment a `vega` process needs to keep its artifacts under `prefix` on this server. */
  env(prefix: string): Record<string, string>;
  /** A client that sees the bucket as stored (no flexible checksums, so the bytes are the object's). */
  client: S3Client;
  /** Every key under `prefix`, with its size. */
  keys(prefix?: string): Promise<{ key: string; size: number }[]>;
  /** The sha256 of an object's bytes as stored. */
  sha256Of(key: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startS3Server(bucket = "vega-test"): Promise<S3Server> {
  const directory = await mkdtemp(path.join(os.tmpdir(), "vega-s3rver-"));
  // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 keeps in its legacy
  // provider: without it every truncated listing (more keys than MaxKeys) answers InternalError.
  const { child, output } = await startCommand(process.execPath, ["--openssl-legacy-provider", main, directory, bucket], {}, /s3rver listening on \d+/, { timeoutMs: 60_000 });
  const port = /s3rver listening on (\d+)/.exec(output())![1];
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({
    endpoint,
    region: S3_TEST_REGION,
    credentials: S3_TEST_CREDENTIALS,
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  return {
    child,
    pid: child.pid!,
    endpoint,
    bucket,
    client,
    env: (prefix) => ({
      VEGA_ARTIFACT_STORE: `s3://${bucket}/${prefix}`,
      VEGA_S3_FORCE_PATH_STYLE: "true",
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_REGION: S3_TEST_REGION,
      AWS_ACCESS_KEY_ID: S3_TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3_TEST_CREDENTIALS.secretAccessKey,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
    }),
    async keys(prefix = "") {
      const found: { key: string; size: number }[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const object of page.Contents ?? []) found.push({ key: object.Key!, size: object.Size ?? 0 });
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return found;
    },
    async sha256Of(key) {
      const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const hash = createHash("sha256");
      for await (const chunk of object.Body as AsyncIterable<Buffer>) hash.update(chunk);
      return hash.digest("hex");
    },
    async stop() {
      client.destroy();
      await stopProcess(child, "SIGTERM");
      await rm(directory, { recursive: true, force: true });
    },
  };
}
