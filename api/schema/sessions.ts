import type { Session } from "../generated/prisma/client.ts";
import { closeSession, createSession, listWorkspaceSessions } from "../services/sessions.ts";
import { builder } from "./builder.ts";
import { UserRef, WorkspaceRef } from "./viewer.ts";

export const SessionRef = builder.objectRef<Session>("Session").implement({
  description: "A legacy per-workspace session; open ones are capped by VEGA_MAX_SESSIONS_PER_WORKSPACE.",
  fields: (t) => ({
    id: t.exposeID("id"),
    workspace: t.field({ type: WorkspaceRef, resolve: async (session, _args, ctx) => (await ctx.loaders.workspace.load(session.workspaceId))! }),
    user: t.field({ type: UserRef, resolve: async (session, _args, ctx) => (await ctx.loaders.user.load(session.userId))! }),
    createdAt: t.field({ type: "DateTime", resolve: (session) => session.createdAt }),
    lastSeenAt: t.field({ type: "DateTime", resolve: (session) => session.lastSeenAt }),
    expiresAt: t.field({ type: "DateTime", resolve: (session) => session.expiresAt }),
    closedAt: t.field({ type: "DateTime", nullable: true, resolve: (session) => session.closedAt }),
  }),
});

builder.objectField(WorkspaceRef, "sessions", (t) =>
  t.field({
    type: [SessionRef],
    description: "Open sessions, newest first (with includeClosed, closed and expired ones too; at most 500).",
    args: { includeClosed: t.arg.boolean({ required: false, defaultValue: false }) },
    resolve: (workspace, args, ctx) => listWorkspaceSessions(ctx.deps, { workspaceId: workspace.id, includeClosed: args.includeClosed ?? false }),
  }),
);

builder.mutationField("createSession", (t) =>
  t.field({
    type: SessionRef,
    description: "Opens a session in a workspace the caller belongs to; SESSION_LIMIT_EXCEEDED at the cap.",
    authScopes: { authenticated: true },
    args: { workspaceId: t.arg.id({ required: true }) },
    resolve: (_root, { workspaceId }, ctx) => createSession(ctx.deps, ctx.viewer!, String(workspaceId)),
  }),
);

builder.mutationField("closeSession", (t) =>
  t.field({
    type: SessionRef,
    authScopes: { authenticated: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => closeSession(ctx.deps, ctx.viewer!, String(id)),
  }),
);
