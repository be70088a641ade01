import type { AuditEntry } from "../generated/prisma/client.ts";
import { listAuditEntries } from "../services/audit.ts";
import { builder } from "./builder.ts";
import { OpsRef } from "./ops.ts";

const AuditEntryRef = builder.objectRef<AuditEntry>("AuditEntry").implement({
  description: "One operator action (or workspace membership change): who did what to which object, and when.",
  fields: (t) => ({
    id: t.exposeID("id"),
    actor: t.exposeString("actor", { description: "The token's sub, or system:<what> for the process itself." }),
    action: t.exposeString("action", { description: "<domain>.<verb>: cleanup.trigger, scan.cancel, workspace.addMember, …" }),
    target: t.exposeString("target", { nullable: true, description: "<Type>:<id> of the object acted on." }),
    at: t.field({ type: "DateTime", resolve: (entry) => entry.at }),
    details: t.field({ type: "JSON", resolve: (entry) => entry.details }),
  }),
});

builder.objectField(OpsRef, "auditLog", (t) =>
  t.connection(
    {
      type: AuditEntryRef,
      description: "The audit log, newest first (`first` or `last` at most 100).",
      resolve: (_ops, args, ctx) => listAuditEntries(ctx.deps, args),
    },
    { name: "AuditEntryConnection" },
    { name: "AuditEntryEdge" },
  ),
);
