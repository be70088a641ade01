import { claimsPauseState, pauseClaims, resumeClaims, subscribeToClaimsPause, type ClaimsPauseState } from "../services/claims.ts";
import type { ClaimsPausePayload } from "../pubsub.ts";
import { builder } from "./builder.ts";
import { OpsRef } from "./ops.ts";

const ClaimsPauseRef = builder.objectRef<ClaimsPauseState | ClaimsPausePayload>("ClaimsPause").implement({
  description:
    "Whether workers may claim queued scans. While paused, claimScans answers no scan (workers keep polling and heartbeating), " +
    "submissions still queue, scans already running go on. Stored in the database: every replica and every restart sees it.",
  fields: (t) => ({
    paused: t.exposeBoolean("paused"),
    reason: t.exposeString("reason", { nullable: true, description: "What the operator gave when pausing (null when not paused)." }),
    since: t.field({ type: "DateTime", nullable: true, description: "When the current pause began.", resolve: (pause) => pause.since }),
    by: t.exposeString("by", { nullable: true, description: "Who paused; when not paused, who last resumed (null if never)." }),
  }),
});

builder.objectField(OpsRef, "claimsPaused", (t) =>
  t.field({ type: ClaimsPauseRef, resolve: (_ops, _args, ctx) => claimsPauseState(ctx.deps, ctx.viewer!) }),
);

builder.mutationField("pauseClaims", (t) =>
  t.field({
    type: ClaimsPauseRef,
    description: "Stops workers from claiming queued scans until resumeClaims (operators; audited). Pausing again replaces the reason.",
    authScopes: { operator: true },
    args: { reason: t.arg.string({ required: true, description: "Why (1 to 500 characters), shown to other operators and in diagnostics." }) },
    resolve: (_root, { reason }, ctx) => pauseClaims(ctx.deps, ctx.viewer!, { reason }),
  }),
);

builder.mutationField("resumeClaims", (t) =>
  t.field({
    type: ClaimsPauseRef,
    description: "Lets workers claim queued scans again, from their next poll (operators; audited).",
    authScopes: { operator: true },
    resolve: (_root, _args, ctx) => resumeClaims(ctx.deps, ctx.viewer!),
  }),
);

builder.subscriptionField("claimsPausedChanged", (t) =>
  t.field({
    type: ClaimsPauseRef,
    description: "Every pause and resume of claiming, on any replica. Operators only.",
    authScopes: { operator: true },
    subscribe: (_root, _args, ctx) => subscribeToClaimsPause(ctx.deps, ctx.viewer!),
    resolve: (pause) => pause,
  }),
);
