// Prisma's CLI runs offline on the WASM schema engine against an in-memory
// PGlite database (see ../shared/STACK.md). It is used by `prisma generate` and,
// for developers, `prisma migrate diff` to write new migrations.
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PrismaPGlite } from "pglite-prisma-adapter";
import type { PrismaConfig } from "prisma/config";

type MigrationAdapterFactory = Awaited<ReturnType<Extract<PrismaConfig, { engine: "js" }>["adapter"]>>;

process.env.VEGA_PRISMA_CLI_URL ??= "postgresql://prisma-cli@localhost/vega";

export default {
  experimental: { adapter: true },
  engine: "js",
  schema: path.join("prisma", "schema.prisma"),
  migrations: { path: path.join("prisma", "migrations") },
  // The cast: pglite-prisma-adapter bundles its own copy of driver-adapter-utils.
  adapter: async () => new PrismaPGlite(new PGlite()) as unknown as MigrationAdapterFactory,
} satisfies PrismaConfig;
