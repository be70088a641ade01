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
 * file is sent with @aws-sdk/lib-storage (one PutObject below PART_BYTES,
 * multipart above it), reading PART_BYTES at a time, so memory stays at
 * PART_BYTES × PARTS_IN_FLIGHT whatever the archive's size. A multipart upload
 * that fails is aborted (leavePartsOnError: false); one left by a process that
 * died mid-commit is removed by the bucket's AbortIncompleteMultipartUpload
 * lifecycle rule (deploy/README.md).
 */
import { createReadStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import path from "node:path";
import type { Readable } from "node:stream";
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { newStorageKey, type ArtifactStore, type DeleteOutcome, type StoredObject } from "./artifact-store.ts";

/** S3's minimum part is 5 MiB; 16 MiB makes a 2 GiB archive 128 parts (of the 10,000 allowed). */
const PART_BYTES = 16 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;
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

const isNotFound = (error: unknown) => {
  const { name, $metadata } = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return name === "NotFound" || name === "NoSuchKey" || $metadata?.httpStatusCode === 404;
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
      const upload = new Upload({
        client,
        params: { Bucket: bucket, Key: objectKey(storageKey), Body: createReadStream(tempPath, { highWaterMark: 1024 * 1024 }) },
        partSize: PART_BYTES,
        queueSize: PARTS_IN_FLIGHT,
        leavePartsOnError: false,
      });
      await upload.done();
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
