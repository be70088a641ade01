/**
 * The S3 backend of the artifact store (VEGA_ARTIFACT_STORE=s3://bucket/prefix):
 * objects at `<prefix><storageKey>`. Credentials and region come from the
 * SDK's standard chain (the task role on ECS, AWS_PROFILE or AWS_* variables
 * elsewhere); AWS_ENDPOINT_URL_S3 points it at an S3-compatible server and
 * VEGA_S3_FORCE_PATH_STYLE addresses the bucket in the path for those that
 * need it.
 *
 * Uploads reach S3 only in `commit`, from the temporary file the upload path
 * already hashed and inspected: a refused upload never creates an object. The
 * file is sent as one PutObject up to PART_BYTES and as a multipart upload
 * above it, PARTS_IN_FLIGHT parts at a time, each part's body streamed from its
 * range of the file: nothing holds a part in memory (@aws-sdk/lib-storage, used
 * before, gathered each part into a buffer; those buffers lived long enough to
 * be collected only by full markings, and the API's RSS grew by 45–67 MiB
 * during a 1 GiB upload). The SDK does not retry a streamed body, so a part is
 * retried here, from the file. A multipart upload that fails is aborted once
 * its parts in flight have settled; one left by a process that died
 * mid-commit is removed by the bucket's AbortIncompleteMultipartUpload
 * lifecycle rule (deploy/README.md).
 */
import { createReadStream } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { randomUUID } from "node:crypto";
import path from "node:path";
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { newStorageKey, type ArtifactStore, type DeleteOutcome, type StoredObject } from "./artifact-store.ts";

/** S3's minimum part is 5 MiB; 16 MiB makes a 2 GiB archive 128 parts (of the 10,000 allowed). */
const PART_BYTES = 16 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;
/** Tries of one part (or of a single PutObject) before the commit fails, waiting PART_RETRY_MS × 2^try between. */
const PART_ATTEMPTS = 4;
const PART_RETRY_MS = 200;
/** DeleteObjects takes at most 1,000 keys a call. */
const DELETE_BATCH = 1000;
/** ListObjectsV2 answers at most 1,000 keys a page. */
const LIST_PAGE = 1000;

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix, empty or ending in "/". */
  prefix: string;
  /** Local directory for uploads in progress. */
  tmpDir: string;
  /** An S3-compatible endpoint (AWS_ENDPOINT_URL_S3); unset: AWS's, from the region. */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** Keys per ListObjectsV2 page and per DeleteObjects call (S3's maximum, 1,000, unless a test asks for smaller). */
  batchSizes?: { list?: number; delete?: number };
  /** Extra client settings (tests pass credentials and a region here instead of through the environment). */
  client?: Partial<S3ClientConfig>;
}

const SILENT_SDK_LOGGER = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** The HTTP status of the answer an SDK error came from; undefined for an error that got no answer (the network, the file). */
const httpStatusOf = (error: unknown) => (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

const isNotFound = (error: unknown) => {
  const { name } = error as { name?: string };
  return name === "NotFound" || name === "NoSuchKey" || httpStatusOf(error) === 404;
};

export async function openS3ArtifactStore(options: S3StoreOptions): Promise<ArtifactStore & { readonly client: S3Client }> {
  const { bucket, prefix, tmpDir } = options;
  await mkdir(tmpDir, { recursive: true });
  const client = new S3Client({
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle ?? false,
    // The SDK's default flexible checksums send streamed bodies in `aws-chunked` framing, which some
    // S3-compatible servers (s3rver among them) store as the object's bytes without an error. AWS itself
    // handles them; elsewhere checksums are sent only where an operation requires one.
    ...(options.endpoint ? { requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED" } : {}),
    // Without a logger, the SDK writes some lines to the console, outside Vega's JSON log: the warning that a
    // streamed body's request failed (putFile sends the part again) among them. Its failures reach Vega as errors.
    logger: SILENT_SDK_LOGGER,
    ...options.client,
  });
  const objectKey = (storageKey: string) => `${prefix}${storageKey}`;
  const deleteBatch = Math.min(options.batchSizes?.delete ?? DELETE_BATCH, DELETE_BATCH);
  const listPage = Math.min(options.batchSizes?.list ?? LIST_PAGE, LIST_PAGE);
  const sizeOf = async (storageKey: string) => {
    try {
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(storageKey) }));
      return head.ContentLength ?? 0;
    } catch (error) {
      if (isNotFound(error)) return 0;
      throw error;
    }
  };

  return {
    kind: "s3",
    location: `s3://${bucket}/${prefix}`,
    tmpDir,
    client,
    tempPath: (filePrefix) => path.join(tmpDir, `${filePrefix}-${randomUUID()}`),
    async commit(tempPath, kind) {
      const storageKey = newStorageKey(kind);
      await putFile(client, { Bucket: bucket, Key: objectKey(storageKey) }, tempPath);
      await rm(tempPath, { force: true });
      return storageKey;
    },
    async openRead(storageKey) {
      try {
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey(storageKey) }));
        return { stream: object.Body as Readable, sizeBytes: object.ContentLength ?? 0 };
      } catch (error) {
        if (isNotFound(error)) throw Object.assign(new Error("no such stored object"), { code: "ENOENT" });
        throw error;
      }
    },
    sizeOf,
    async delete(storageKey) {
      const bytes = await sizeOf(storageKey);
      if (bytes === 0) return 0;
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: objectKey(storageKey) }));
      return bytes;
    },
    async deleteMany(storageKeys) {
      const outcome: DeleteOutcome = { deleted: [], failures: [] };
      for (let start = 0; start < storageKeys.length; start += deleteBatch) {
        const keys = storageKeys.slice(start, start + deleteBatch);
        // Quiet: the answer lists only the keys that failed. S3 reports a key that was already gone as deleted.
        const answer = await client.send(
          new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((key) => ({ Key: objectKey(key) })), Quiet: true } }),
        );
        const failed = new Map((answer.Errors ?? []).map((failure) => [failure.Key, failure]));
        for (const key of keys) {
          const failure = failed.get(objectKey(key));
          if (failure) outcome.failures.push({ storageKey: key, error: new Error(`${failure.Code}: ${failure.Message}`) });
          else outcome.deleted.push(key);
        }
      }
      return outcome;
    },
    async *list(kind) {
      let continuationToken: string | undefined;
      do {
        const page = await client.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}${kind}/`, MaxKeys: listPage, ContinuationToken: continuationToken }),
        );
        const objects: StoredObject[] = (page.Contents ?? []).flatMap((object) =>
          object.Key
            ? [{ storageKey: object.Key.slice(prefix.length), sizeBytes: object.Size ?? 0, modifiedAt: object.LastModified ?? new Date() }]
            : [],
        );
        if (objects.length > 0) yield objects;
        continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (continuationToken);
    },
    async downloadLocation(storageKey, ttlSeconds) {
      const expiresAt = new Date(Date.now() + ttlSeconds * 1000);
      const url = await getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: objectKey(storageKey) }), { expiresIn: ttlSeconds });
      return { kind: "presigned", url, expiresAt };
    },
  };
}

/** The object `target` gets the bytes of `file`: in one PutObject, or in parts above PART_BYTES. */
async function putFile(client: S3Client, target: { Bucket: string; Key: string }, file: string) {
  const { size } = await stat(file);
  /** Sends a request whose body streams the file's bytes from `start` to `end` (exclusive); its descriptor is closed after, whatever the answer. */
  const fromFile = async <T>(start: number, end: number, send: (body: Readable | Buffer) => Promise<T>): Promise<T> => {
    if (end === start) return send(Buffer.alloc(0));
    const stream = createReadStream(file, { start, end: end - 1, highWaterMark: 1024 * 1024 });
    try {
      return await send(stream);
    } finally {
      stream.destroy();
    }
  };
  if (size <= PART_BYTES) {
    await withRetries(() => fromFile(0, size, (Body) => client.send(new PutObjectCommand({ ...target, Body, ContentLength: size }))));
    return;
  }
  const { UploadId } = await client.send(new CreateMultipartUploadCommand(target));
  const partCount = Math.ceil(size / PART_BYTES);
  const parts: CompletedPart[] = [];
  let next = 0;
  let failed = false;
  const sendParts = async () => {
    // Each sender takes the next part until none is left or one of them failed.
    while (!failed && next < partCount) {
      const PartNumber = ++next;
      const start = (PartNumber - 1) * PART_BYTES;
      const end = Math.min(size, start + PART_BYTES);
      try {
        const { ETag } = await withRetries(() =>
          fromFile(start, end, (Body) => client.send(new UploadPartCommand({ ...target, UploadId, PartNumber, Body, ContentLength: end - start }))),
        );
        parts[PartNumber - 1] = { PartNumber, ETag };
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const senders = await Promise.allSettled(Array.from({ length: Math.min(PARTS_IN_FLIGHT, partCount) }, sendParts));
  const failure = senders.find((sender) => sender.status === "rejected");
  try {
    if (failure) throw failure.reason;
    await client.send(new CompleteMultipartUploadCommand({ ...target, UploadId, MultipartUpload: { Parts: parts } }));
  } catch (error) {
    // Nothing of this upload is in flight any more, so the abort frees every part it stored.
    await client.send(new AbortMultipartUploadCommand({ ...target, UploadId })).catch(() => {});
    throw error;
  }
}

/** `send()`, tried again after a network error, a throttling answer or a server error (not a client error). */
async function withRetries<T>(send: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (error) {
      const status = httpStatusOf(error);
      const retryable = status === undefined || status === 408 || status === 429 || status >= 500;
      if (!retryable || attempt >= PART_ATTEMPTS) throw error;
      await sleep(PART_RETRY_MS * 2 ** (attempt - 1));
    }
  }
}
