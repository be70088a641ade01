import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { defaultMigrationsDir, listMigrations, migrate, MigrationError } from "../../api/db/migrate.ts";
import { runVega } from "../support/cli.ts";
import { createPostgresDatabase, openTestDatabase, postgresTestUrl, type TestDatabase } from "../support/database.ts";

const opened: TestDatabase[] = [];
afterEach(async () => {
  for (const db of opened.splice(0)) await db.close();
});

async function emptyDatabase() {
  const db = await openTestDatabase({ migrated: false });
  opened.push(db);
  return db;
}

// Each test starts from an empty database, paying PGlite's initdb: seconds of CPU, minutes on a loaded machine.
describe("the migration runner", { timeout: 240_000 }, () => {
  it("applies every migration once and records it as Prisma does", async () => {
    const db = await emptyDatabase();
    const migrations = await listMigrations();
    const first = await migrate(db.database.sql);
    expect(first.applied).toEqual(migrations.map((migration) => migration.name));
    const second = await migrate(db.database.sql);
    expect(second).toEqual({ applied: [], alreadyApplied: first.applied });

    const rows = await db.database.sql.withConnection((connection) =>
      connection.query<{ migration_name: string; checksum: string; finished_at: Date | null; applied_steps_count: number }>(
        `SELECT migration_name, checksum, finished_at, applied_steps_count FROM "_prisma_migrations"`,
      ),
    );
    expect(rows).toHaveLength(migrations.length);
    expect(rows[0]).toMatchObject({ checksum: migrations[0].checksum, applied_steps_count: 1 });
    expect(rows[0].finished_at).not.toBeNull();
  });

  it("refuses to run when an applied migration was modified", async () => {
    const db = await emptyDatabase();
    await migrate(db.database.sql);
    const dir = await mkdtemp(path.join(os.tmpdir(), "vega-migrations-"));
    try {
      await cp(defaultMigrationsDir, dir, { recursive: true });
      const [first] = await listMigrations();
      await writeFile(path.join(dir, first.name, "migration.sql"), `${first.sql}\n-- edited after release\n`);
      await expect(migrate(db.database.sql, { migrationsDir: dir })).rejects.toThrow(/was modified after it was applied/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rolls back a failing migration and reports it", async () => {
    const db = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), "vega-migrations-"));
    try {
      await cp(defaultMigrationsDir, dir, { recursive: true });
      const broken = path.join(dir, "99990101000000_broken");
      await cp(path.join(dir, (await listMigrations())[0].name), broken, { recursive: true });
      await writeFile(path.join(broken, "migration.sql"), `CREATE TABLE "half_done" (id int);\nSELECT no_such_function();\n`);
      const error = await migrate(db.database.sql, { migrationsDir: dir }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(MigrationError);
      expect(String(error)).toMatch(/99990101000000_broken failed and was rolled back/);
      const tables = await db.database.sql.withConnection((connection) =>
        connection.query(`SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done'`),
      );
      expect(tables).toHaveLength(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!postgresTestUrl)("vega maintenance migrate against PostgreSQL", () => {
  it("applies the migrations once; a second run applies nothing and exits 0; two at once apply each migration once", async () => {
    const created = await createPostgresDatabase();
    try {
      const env = { VEGA_DATABASE_URL: created.url, VEGA_JWT_SECRET: "x".repeat(32) };
      const [a, b] = await Promise.all([runVega(["maintenance", "migrate"], env), runVega(["maintenance", "migrate"], env)]);
      expect([a.code, b.code]).toEqual([0, 0]);
      const summaries = [JSON.parse(a.stdout), JSON.parse(b.stdout)];
      const names = (await listMigrations()).map((migration) => migration.name);
      expect(summaries.flatMap((summary) => summary.applied).sort()).toEqual(names);

      const again = await runVega(["maintenance", "migrate"], env);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, applied: [], alreadyApplied: names });
    } finally {
      await created.drop();
    }
  });
});

describe("vega maintenance migrate", () => {
  it("migrates the embedded database and prints one line of JSON", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "vega-data-"));
    try {
      const result = await runVega(["maintenance", "migrate"], { VEGA_DATA_DIR: dataDir });
      expect(result.code).toBe(0);
      const summary = JSON.parse(result.stdout.trim());
      expect(summary).toMatchObject({ ok: true, job: "migrate" });
      expect(summary.applied.length).toBeGreaterThan(0);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("exits non-zero with the reason when the database is unreachable", async () => {
    const result = await runVega(["maintenance", "migrate"], {
      VEGA_DATABASE_URL: "postgresql://nobody@127.0.0.1:1/none",
      VEGA_JWT_SECRET: "x".repeat(32),
    });
    expect(result.code).not.toBe(0);
    expect(JSON.parse(result.stdout.trim())).toMatchObject({ ok: false, job: "migrate" });
  });
});
