/**
 * Scan submission: the upload has been streamed to a temporary file; here the
 * archive is inspected, then the file, its Artifact, the QUEUED scan and its
 * first event are created together under the user's quota lock. A refusal at
 * any step leaves nothing behind (the upload path removes the temporary file;
 * a file already moved into the store is removed here).
 */
import type { Deps, Viewer } from "../context.ts";
import { badUserInput, sourceTooLarge } from "../../shared/errors.ts";
import { inspectArchive } from "../hardening/archive-inspection.ts";
import { archiveLimitsOf } from "../../shared/archive-rules.ts";
import { withActiveScanQuota } from "./quota.ts";
import { writeScans } from "./scan-state.ts";
import type { StoredUpload } from "./uploads.ts";
import { resolveMemberWorkspace } from "./users.ts";

export interface SubmitScanInput {
  workspaceId?: string | null;
  label?: string | null;
  /** The placeholder the File variable carries. */
  source: string;
}

const MAX_LABEL_LENGTH = 200;

/** `uploads`: the files this request's upload path stored, by placeholder (a per-request value, passed last like loaders). */
export async function submitScan(
  deps: Pick<Deps, "prisma" | "pubsub" | "config" | "artifacts" | "metrics">,
  viewer: Viewer,
  input: SubmitScanInput,
  uploads: Map<string, StoredUpload>,
) {
  try {
    return await queueSubmittedScan(deps, viewer, input, uploads);
  } catch (error) {
    // Refusals before the request reached here (quota from the token, size) are counted by the upload path.
    deps.metrics.countSubmissionRefusal(error);
    throw error;
  }
}

async function queueSubmittedScan(
  deps: Pick<Deps, "prisma" | "pubsub" | "config" | "artifacts">,
  viewer: Viewer,
  input: SubmitScanInput,
  uploads: Map<string, StoredUpload>,
) {
  const user = viewer.user!;
  const upload = uploads.get(input.source);
  if (!upload) {
    throw badUserInput("`source` must be a file sent with the request, per the GraphQL multipart request spec");
  }
  const label = input.label?.trim() || null;
  if (label && label.length > MAX_LABEL_LENGTH) throw badUserInput(`label must be at most ${MAX_LABEL_LENGTH} characters`);
  const workspaceId = await resolveMemberWorkspace(deps, viewer, input.workspaceId);
  if (upload.sizeBytes > deps.config.maxSourceBytes) {
    // The stream was cut at the limit already; this guards any other path that stores uploads.
    throw sourceTooLarge({ limit: deps.config.maxSourceBytes, size: upload.sizeBytes });
  }
  const inspection = await inspectArchive(upload.tempPath, archiveLimitsOf(deps.config));

  const storageKey = await deps.artifacts.commit(upload.tempPath, "sources");
  uploads.delete(upload.placeholder);
  try {
    // The scan and its first event are written through scan-state's door, inside the quota lock's
    // transaction; the door publishes scanStateChanged once that transaction has committed.
    const { scan } = await writeScans(
      deps,
      async (writes) => {
        const artifact = await writes.tx.artifact.create({
          data: {
            kind: "SOURCE",
            workspaceId,
            ownerId: user.id,
            storageKey,
            fileName: upload.fileName,
            sizeBytes: BigInt(upload.sizeBytes),
            sha256: upload.sha256,
            entryCount: inspection.entryCount,
            uncompressedBytes: BigInt(inspection.uncompressedBytes),
          },
        });
        return writes.createWithFirstEvent(
          { workspaceId, ownerId: user.id, label, sourceArtifactId: artifact.id },
          { entries: inspection.entryCount, sizeBytes: upload.sizeBytes },
        );
      },
      (body) => withActiveScanQuota(deps.prisma, deps.config, user.id, body),
    );
    return { scan };
  } catch (error) {
    await deps.artifacts.delete(storageKey);
    throw error;
  }
}
