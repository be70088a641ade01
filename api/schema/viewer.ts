import type { User, Workspace } from "../generated/prisma/client.ts";
import { addWorkspaceMember, createWorkspace } from "../services/users.ts";
import { builder } from "./builder.ts";

export const UserRef = builder.objectRef<User>("User").implement({
  description: "A person, known by the `sub` of their token.",
  fields: (t) => ({
    id: t.exposeID("id"),
  }),
});

export const WorkspaceRef = builder.objectRef<Workspace>("Workspace").implement({
  description: "Scans belong to a workspace; its members read them.",
  fields: (t) => ({
    id: t.exposeID("id"),
    name: t.exposeString("name"),
    personal: t.exposeBoolean("personal"),
    owner: t.field({ type: UserRef, resolve: async (workspace, _args, ctx) => (await ctx.loaders.user.load(workspace.ownerId))! }),
    createdAt: t.field({ type: "DateTime", resolve: (workspace) => workspace.createdAt }),
  }),
});

interface ViewerShape {
  id: string;
  groups: string[];
  isOperator: boolean;
}

export const ViewerRef = builder.objectRef<ViewerShape>("Viewer").implement({
  description: "The caller, as their token describes them.",
  fields: (t) => ({
    id: t.exposeID("id"),
    groups: t.exposeStringList("groups"),
    isOperator: t.exposeBoolean("isOperator"),
    workspaces: t.field({
      type: [WorkspaceRef],
      resolve: async (viewer, _args, ctx) => {
        const ids = await ctx.loaders.memberWorkspaceIds.load(viewer.id);
        const workspaces = await ctx.loaders.workspace.loadMany([...ids]);
        return (workspaces.filter((workspace) => workspace && !(workspace instanceof Error)) as Workspace[]).sort(
          (a, b) => Number(b.personal) - Number(a.personal) || a.createdAt.getTime() - b.createdAt.getTime(),
        );
      },
    }),
  }),
});

builder.queryField("viewer", (t) =>
  t.field({
    type: ViewerRef,
    authScopes: { authenticated: true },
    resolve: (_root, _args, ctx) => ({
      id: ctx.viewer!.principal.sub,
      groups: ctx.viewer!.principal.groups,
      isOperator: ctx.viewer!.isOperator,
    }),
  }),
);

builder.mutationField("createWorkspace", (t) =>
  t.field({
    type: WorkspaceRef,
    authScopes: { authenticated: true },
    args: { name: t.arg.string({ required: true }) },
    resolve: (_root, { name }, ctx) => createWorkspace(ctx.deps, ctx.viewer!, name),
  }),
);

builder.mutationField("addWorkspaceMember", (t) =>
  t.field({
    type: WorkspaceRef,
    description: "Adds a user to a workspace. Only the workspace's owner may.",
    authScopes: { authenticated: true },
    args: { workspaceId: t.arg.id({ required: true }), userId: t.arg.id({ required: true }) },
    resolve: (_root, { workspaceId, userId }, ctx) =>
      addWorkspaceMember(ctx.deps, ctx.viewer!, { workspaceId: String(workspaceId), userId: String(userId) }),
  }),
);
