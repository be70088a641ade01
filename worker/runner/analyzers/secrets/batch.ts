/**
 * A batch of files read and scanned on the current thread (the calling thread
 * or a worker of worker-pool.ts).
 */
import { closeSync, constants as fsConstants, openSync, readSync } from "node:fs";
import { noSkips, type SkipCounts } from "../skipped.ts";
import { findSecrets, isBinary, type SecretFinding } from "./file-scanner.ts";

export interface CandidateFile {
  absolutePath: string;
  relativePath: string;
}

export interface FileBatchResult {
  findings: SecretFinding[];
  filesScanned: number;
  filesSkipped: number;
  skipped: SkipCounts;
  bytesScanned: number;
}

export const emptyResult = (): FileBatchResult => ({ findings: [], filesScanned: 0, filesSkipped: 0, skipped: noSkips(), bytesScanned: 0 });

/**
 * Reads and scans files on the current thread, one at a time, through one read
 * buffer (see readFileWithin).
 */
export function scanBatch(files: CandidateFile[], maxFileBytes: number): FileBatchResult {
  const result = emptyResult();
  for (const file of files) {
    const content = readFileWithin(file.absolutePath, maxFileBytes);
    if (content === null || content === OVER_SIZE_LIMIT || isBinary(content)) {
      result.filesSkipped++;
      result.skipped[content === null ? "unreadableFiles" : content === OVER_SIZE_LIMIT ? "oversizedFiles" : "binaryFiles"]++;
      continue;
    }
    result.filesScanned++;
    result.bytesScanned += content.length;
    for (const finding of findSecrets(file.relativePath, content)) result.findings.push(finding);
  }
  return result;
}

let readBuffer = Buffer.alloc(0);
/** readFileWithin's answer for a file larger than the limit (null is one that could not be read). */
const OVER_SIZE_LIMIT: unique symbol = Symbol("over the size limit");

/**
 * The file's bytes; OVER_SIZE_LIMIT when it is larger than `maxFileBytes`;
 * null when it is a symbolic link or cannot be read. The bytes are a view of a buffer that the
 * next call overwrites: findings copy what they keep. Source trees are mostly
 * small files, and on this kind of machine the system calls and allocations per
 * file cost more than scanning the bytes, so a file costs open, one read (a
 * short read of a regular file is its end; a full buffer means the file is over
 * the limit, without an fstat to learn its size) and close, and no allocation.
 */
function readFileWithin(absolutePath: string, maxFileBytes: number): Buffer | typeof OVER_SIZE_LIMIT | null {
  if (readBuffer.length < maxFileBytes + 1) readBuffer = Buffer.allocUnsafe(maxFileBytes + 1);
  let descriptor: number;
  try {
    // O_NOFOLLOW: a file replaced by a link after the listing is not followed;
    // O_NONBLOCK: nor does a FIFO put there block the scan.
    descriptor = openSync(absolutePath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const length = readSync(descriptor, readBuffer, 0, maxFileBytes + 1, 0);
    return length > maxFileBytes ? OVER_SIZE_LIMIT : readBuffer.subarray(0, length);
  } catch {
    return null;
  } finally {
    closeSync(descriptor);
  }
}
