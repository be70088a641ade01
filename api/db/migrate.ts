/**
 * Applies the SQL migrations under prisma/migrations in name order, each in its
 * own transaction, and records them in `_prisma_migrations` with Prisma's own
 * columns and checksum (sha256 of migration.sql), so that `prisma migrate
 * status` reads the same history. Prisma's `migrate deploy` cannot run here
 * (no schema engine binary offline; adapter-pg fails on real PostgreSQL: docs/decisions.md),
 * hence this runner.
 */
import { createHash, randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { SqlConnection, SqlDriver } from "./driver.ts";

export const defaultMigrationsDir = fileURLToPath(new URL("../../prisma/migrations", import.meta.url));

/** The key Prisma's own migrate takes, so our runner and Prisma's exclude each other too. */
const MIGRATION_LOCK_KEY = 72707369;

export class MigrationError extends Error {
  override name = "MigrationError";
}

export interface MigrationResult {
  applied: string[];
  alreadyApplied: string[];
}

interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

interface AppliedRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

export async function listMigrations(migrationsDir = defaultMigrationsDir): Promise<Migration[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  const names = entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();
  return Promise.all(
    names.map(async (name) => {
      const sql = await readFile(path.join(migrationsDir, name, "migration.sql"), "utf8");
      return { name, sql, checksum: createHash("sha256").update(sql).digest("hex") };
    }),
  );
}

export async function migrate(
  driver: SqlDriver,
  options: { migrationsDir?: string; log?: (message: string) => void } = {},
): Promise<MigrationResult> {
  const migrations = await listMigrations(options.migrationsDir);
  const log = options.log ?? (() => {});
  return driver.withConnection(async (connection) => {
    // A session-level lock: a second `migrate` waits here, then finds everything applied.
    await connection.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
    try {
      await ensureHistoryTable(connection);
      return await applyPending(connection, migrations, log);
    } finally {
      await connection.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
    }
  });
}

async function ensureHistoryTable(connection: SqlConnection) {
  await connection.exec(`
    CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
      "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
      "checksum"            VARCHAR(64) NOT NULL,
      "finished_at"         TIMESTAMPTZ,
      "migration_name"      VARCHAR(255) NOT NULL,
      "logs"                TEXT,
      "rolled_back_at"      TIMESTAMPTZ,
      "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
      "applied_steps_count" INTEGER NOT NULL DEFAULT 0
    )`);
}

async function applyPending(connection: SqlConnection, migrations: Migration[], log: (message: string) => void) {
  const rows = await connection.query<AppliedRow>(
    `SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" WHERE rolled_back_at IS NULL`,
  );
  const applied = new Map(rows.map((row) => [row.migration_name, row]));
  const known = new Set(migrations.map((migration) => migration.name));

  for (const row of rows) {
    if (row.finished_at === null) {
      throw new MigrationError(
        `Migration ${row.migration_name} started but never finished; inspect the database, then mark it rolled back ` +
          `(UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = '${row.migration_name}')`,
      );
    }
    if (!known.has(row.migration_name)) {
      throw new MigrationError(
        `Migration ${row.migration_name} is applied to the database but missing from prisma/migrations: ` +
          `is this an older release of Vega?`,
      );
    }
  }

  const result: MigrationResult = { applied: [], alreadyApplied: [] };
  for (const migration of migrations) {
    const row = applied.get(migration.name);
    if (row) {
      if (row.checksum !== migration.checksum) {
        throw new MigrationError(
          `Migration ${migration.name} was modified after it was applied ` +
            `(checksum ${row.checksum} in the database, ${migration.checksum} on disk); refusing to continue`,
        );
      }
      result.alreadyApplied.push(migration.name);
      continue;
    }
    log(`applying migration ${migration.name}`);
    await connection.exec("BEGIN");
    try {
      await connection.exec(migration.sql);
      await connection.query(
        `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
         VALUES ($1, $2, $3, now(), now(), 1)`,
        [randomUUID(), migration.checksum, migration.name],
      );
      await connection.exec("COMMIT");
    } catch (error) {
      await connection.exec("ROLLBACK");
      const reason = error instanceof Error ? error.message : String(error);
      throw new MigrationError(`Migration ${migration.name} failed and was rolled back: ${reason}`);
    }
    result.applied.push(migration.name);
  }
  return result;
}

/** Migrations on disk that the database has not applied (all of them when it has no history table). */
export async function pendingMigrations(driver: SqlDriver, migrationsDir?: string): Promise<string[]> {
  const known = (await listMigrations(migrationsDir)).map((migration) => migration.name);
  const applied = await driver
    .withConnection((connection) =>
      connection.query<{ migration_name: string }>(
        `SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL`,
      ),
    )
    .catch(() => []);
  const appliedNames = new Set(applied.map((row) => row.migration_name));
  return known.filter((name) => !appliedNames.has(name));
}
