/**
 * Pausing claims: during a maintenance window or after a bad deploy an operator
 * stops workers from taking queued scans (pauseClaims), and lets them again
 * (resumeClaims). The state is one database row, so that every API replica and
 * every restart sees it; while paused, claimScans answers no scan, workers keep
 * polling and heartbeating, submissions still queue, and diagnostics says why
 * the queue does not move. Scans already starting or running go on.
 */
import type { Deps, Viewer } from "../context.ts";
import type { PrismaClient } from "../db/client.ts";
import { badUserInput } from "../../shared/errors.ts";
import type { Prisma } from "../generated/prisma/client.ts";
import type { ClaimsPausePayload } from "../pubsub.ts";
import { recordAudit } from "./audit.ts";
import { requireOperator } from "./ops-scans.ts";

/** The id of the one row. */
const CLAIMS_ROW = "claims";
const MAX_REASON_LENGTH = 500;

export const claimsAuditActions = { pause: "claims.pause", resume: "claims.resume" } as const;

export interface ClaimsPauseState {
  paused: boolean;
  reason: string | null;
  since: Date | null;
  by: string | null;
}

const notPaused: ClaimsPauseState = { paused: false, reason: null, since: null, by: null };

/** The state as stored (no row: never paused). */
export async function readClaimsPause(prisma: PrismaClient | Prisma.TransactionClient): Promise<ClaimsPauseState> {
  const row = await prisma.claimsPause.findUnique({ where: { id: CLAIMS_ROW } });
  return row ? { paused: row.paused, reason: row.reason, since: row.since, by: row.by } : notPaused;
}

/** Ops.claimsPaused. */
export function claimsPauseState(deps: Pick<Deps, "prisma">, viewer: Viewer): Promise<ClaimsPauseState> {
  requireOperator(viewer, "Ops.claimsPaused");
  return readClaimsPause(deps.prisma);
}

/** Read by the claim path inside its transaction: a claim racing a pause either commits first or sees the pause. */
export async function claimsArePaused(tx: Prisma.TransactionClient): Promise<boolean> {
  const [row] = await tx.$queryRaw<{ paused: boolean }[]>`SELECT paused FROM "ClaimsPause" WHERE id = ${CLAIMS_ROW} FOR SHARE`;
  return row?.paused ?? false;
}

function toPayload(state: ClaimsPauseState): ClaimsPausePayload {
  return { paused: state.paused, reason: state.reason, since: state.since?.toISOString() ?? null, by: state.by };
}

/** Mutation.pauseClaims: pausing while paused keeps the first `since` and takes the new reason. */
export async function pauseClaims(deps: Pick<Deps, "prisma" | "pubsub">, viewer: Viewer, args: { reason: string }): Promise<ClaimsPauseState> {
  requireOperator(viewer, "pauseClaims");
  const reason = args.reason.trim();
  if (reason === "" || reason.length > MAX_REASON_LENGTH) {
    throw badUserInput(`reason must be 1 to ${MAX_REASON_LENGTH} characters: it tells other operators why the queue does not move`, { field: "reason" });
  }
  const by = viewer.principal.sub;
  const state = await deps.prisma.$transaction(async (tx) => {
    // The row lock serializes pause and resume (and waits for claims reading the flag).
    const [current] = await tx.$queryRaw<{ paused: boolean; since: Date | null }[]>`
      SELECT paused, since FROM "ClaimsPause" WHERE id = ${CLAIMS_ROW} FOR UPDATE`;
    const since = current?.paused && current.since ? current.since : new Date();
    const row = await tx.claimsPause.upsert({
      where: { id: CLAIMS_ROW },
      create: { id: CLAIMS_ROW, paused: true, reason, since, by },
      update: { paused: true, reason, since, by },
    });
    await recordAudit(tx, { actor: by, action: claimsAuditActions.pause, target: null, details: { reason, alreadyPaused: Boolean(current?.paused) } });
    return { paused: row.paused, reason: row.reason, since: row.since, by: row.by };
  });
  deps.pubsub.publish("claimsPausedChanged", toPayload(state));
  return state;
}

/** Mutation.resumeClaims: workers claim again at their next poll. Resuming while not paused changes nothing but is audited. */
export async function resumeClaims(deps: Pick<Deps, "prisma" | "pubsub">, viewer: Viewer): Promise<ClaimsPauseState> {
  requireOperator(viewer, "resumeClaims");
  const by = viewer.principal.sub;
  const state = await deps.prisma.$transaction(async (tx) => {
    const [current] = await tx.$queryRaw<{ paused: boolean; reason: string | null; since: Date | null }[]>`
      SELECT paused, reason, since FROM "ClaimsPause" WHERE id = ${CLAIMS_ROW} FOR UPDATE`;
    await tx.claimsPause.upsert({
      where: { id: CLAIMS_ROW },
      create: { id: CLAIMS_ROW, paused: false, reason: null, since: null, by },
      update: { paused: false, reason: null, since: null, by },
    });
    const pausedSeconds = current?.paused && current.since ? Math.round((Date.now() - current.since.getTime()) / 1000) : null;
    await recordAudit(tx, {
      actor: by,
      action: claimsAuditActions.resume,
      target: null,
      details: { wasPaused: Boolean(current?.paused), pausedReason: current?.reason ?? null, pausedSeconds },
    });
    return { ...notPaused, by };
  });
  deps.pubsub.publish("claimsPausedChanged", toPayload(state));
  return state;
}

/** Subscription.claimsPausedChanged (operators; checked by the field's scope when the subscription starts). */
export function subscribeToClaimsPause(deps: Pick<Deps, "pubsub">, viewer: Viewer): AsyncIterable<ClaimsPausePayload> {
  requireOperator(viewer, "claimsPausedChanged");
  return deps.pubsub.subscribe("claimsPausedChanged");
}
