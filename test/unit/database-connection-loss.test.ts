import pg from "pg";
import { describe, expect, it } from "vitest";
import { openTestDatabase, postgresTestUrl } from "../support/database.ts";

/** Ends every server connection to `database` but the caller's, as a PostgreSQL restart or failover would. */
async function terminateConnections(database: string): Promise<number> {
  const admin = new pg.Client({ connectionString: postgresTestUrl });
  await admin.connect();
  try {
    const { rows } = await admin.query(
      "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      [database],
    );
    return rows.length;
  } finally {
    await admin.end();
  }
}

describe.skipIf(!postgresTestUrl)("losing PostgreSQL connections (PostgreSQL)", () => {
  it("survives the server ending its idle connections, and the next queries reconnect", async () => {
    const db = await openTestDatabase();
    try {
      // Both pools hold an idle client now: Prisma's and the raw driver's (migrations, advisory locks).
      await db.database.prisma.user.count();
      await db.database.sql.withConnection((connection) => connection.query("SELECT 1"));
      const name = new URL(db.url!).pathname.slice(1);
      expect(await terminateConnections(name)).toBeGreaterThanOrEqual(2);

      // The idle clients' "error" events arrive asynchronously; an unheard one would fail this file.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(await db.database.prisma.user.count()).toBe(0);
      const rows = await db.database.sql.withConnection((connection) => connection.query<{ one: number }>("SELECT 1 AS one"));
      expect(rows).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
    }
  });
});
