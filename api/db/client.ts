/**
 * Opens the database named by the settings: embedded PGlite under
 * VEGA_DATA_DIR when VEGA_DATABASE_URL is unset, PostgreSQL through
 * @prisma/adapter-pg otherwise. Both speak one PostgreSQL dialect, so the same
 * migrations and raw SQL (SKIP LOCKED, advisory locks) serve both.
 *
 * The embedded database is one process's: its data directory's lock
 * (./data-dir-lock.ts) is taken before PGlite opens and released on close.
 * PostgreSQL is checked with one query at open, so that a server that cannot be
 * reached is reported as such and not as something else later.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaPGlite } from "pglite-prisma-adapter";
import pg from "pg";
import type { Config } from "../../shared/config.ts";
import { acquireDataDirLock, type DataDirLock } from "./data-dir-lock.ts";
import { PrismaClient } from "../generated/prisma/client.ts";
import { pgliteDriver, postgresDriver, type SqlDriver } from "./driver.ts";

export type { PrismaClient } from "../generated/prisma/client.ts";

export interface Database {
  prisma: PrismaClient;
  sql: SqlDriver;
  /** Where the data lives, for logs: a directory, "memory", or the URL without its password. */
  description: string;
  /** The embedded database's data directory lock, held while the database is open. */
  dataDirLock?: DataDirLock;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** Observes every SQL statement Prisma sends (tests count them). */
  onQuery?: (sql: string) => void;
  /** What the opener runs, recorded in the data directory's lock ("vega start"). */
  purpose?: string;
  /**
   * An in-memory database starts from this dump of a data directory (PGlite's dumpDataDir) instead
   * of empty: tests migrate one template once and load a copy per database (0.7 s against 2.1 s).
   */
  loadDataDir?: Blob;
}

/** VEGA_DATABASE_URL names a server that does not answer. */
export class DatabaseUnreachableError extends Error {
  override name = "DatabaseUnreachableError";
}

export async function openDatabase(
  config: Pick<Config, "databaseUrl" | "dataDir" | "databasePoolSize">,
  options: DatabaseOptions & { inMemory?: boolean } = {},
): Promise<Database> {
  if (config.databaseUrl) return openPostgres(config.databaseUrl, config.databasePoolSize, options);
  if (options.inMemory) return openPglite(undefined, options);
  const lock = await acquireDataDirLock(config.dataDir, { command: options.purpose ?? "vega" });
  try {
    return await openPglite(path.join(config.dataDir, "pglite"), options, lock);
  } catch (error) {
    await lock.release();
    throw error;
  }
}

async function openPglite(directory: string | undefined, options: DatabaseOptions, lock?: DataDirLock): Promise<Database> {
  if (directory) await mkdir(directory, { recursive: true });
  const pglite = directory ? new PGlite(directory) : new PGlite(options.loadDataDir ? { loadDataDir: options.loadDataDir } : {});
  await pglite.waitReady;
  // pglite-prisma-adapter bundles its own copy of driver-adapter-utils: the same
  // interface at run time, a distinct type to the compiler.
  const prisma = createPrisma(new PrismaPGlite(pglite) as unknown as AdapterFactory, options);
  const sql = pgliteDriver(pglite);
  return {
    prisma,
    sql,
    description: directory ?? "memory",
    dataDirLock: lock,
    async close() {
      try {
        await prisma.$disconnect();
        await sql.close();
      } finally {
        await lock?.release();
      }
    },
  };
}

async function openPostgres(url: string, poolSize: number, options: DatabaseOptions): Promise<Database> {
  const prisma = createPrisma(new PrismaPg({ connectionString: url, max: poolSize }), options);
  // The raw driver (migrations, advisory locks held across statements) keeps a small pool of its own.
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  // An idle client whose server connection ends (a PostgreSQL restart, a failover, an operator's
  // pg_terminate_backend) emits "error" on the pool; unheard, that event would end the process.
  // The pool has already discarded the client, and the next query opens a new connection.
  pool.on("error", () => {});
  const sql = postgresDriver(pool);
  const redacted = new URL(url);
  if (redacted.password) redacted.password = "***";
  try {
    await sql.withConnection((connection) => connection.query("SELECT 1"));
  } catch (error) {
    await sql.close().catch(() => {});
    await prisma.$disconnect().catch(() => {});
    // A refused connection to "localhost" is an AggregateError (IPv4 and IPv6) with an empty message and a code.
    const reason = (error instanceof Error && error.message) || (error as NodeJS.ErrnoException).code || String(error);
    throw new DatabaseUnreachableError(`cannot connect to the database at ${redacted} (${reason}): is VEGA_DATABASE_URL right, and is PostgreSQL up?`);
  }
  return {
    prisma,
    sql,
    description: redacted.toString(),
    async close() {
      await prisma.$disconnect();
      await sql.close();
    },
  };
}

type AdapterFactory = NonNullable<ConstructorParameters<typeof PrismaClient>[0]>["adapter"];

function createPrisma(adapter: AdapterFactory, options: DatabaseOptions) {
  if (!options.onQuery) return new PrismaClient({ adapter });
  const prisma = new PrismaClient({ adapter, log: [{ emit: "event", level: "query" }] });
  const onQuery = options.onQuery;
  prisma.$on("query", (event) => onQuery(event.query));
  return prisma;
}
