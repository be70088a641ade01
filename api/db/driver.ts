/**
 * A raw SQL connection to the database, under Prisma: the migration runner
 * needs multi-statement scripts and a session-level advisory lock, which Prisma's
 * client does not offer. PGlite is one in-process connection; PostgreSQL is a
 * `pg` pool from which one client is checked out per `withConnection`.
 */
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";

export interface SqlConnection {
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]>;
  /** Runs a script of several statements (simple query protocol). */
  exec(sql: string): Promise<void>;
}

export interface SqlDriver {
  readonly kind: "pglite" | "postgres";
  /** Runs `work` on one connection, so that session state (locks, transactions) holds across its statements. */
  withConnection<T>(work: (connection: SqlConnection) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export function pgliteDriver(pglite: PGlite): SqlDriver {
  const connection: SqlConnection = {
    async query<Row>(sql: string, params: unknown[] = []) {
      const result = await pglite.query<Row>(sql, params);
      return result.rows;
    },
    async exec(sql: string) {
      await pglite.exec(sql);
    },
  };
  return {
    kind: "pglite",
    withConnection: (work) => work(connection),
    close: () => pglite.close(),
  };
}

export function postgresDriver(pool: pg.Pool): SqlDriver {
  return {
    kind: "postgres",
    async withConnection(work) {
      const client = await pool.connect();
      try {
        return await work({
          async query<Row>(sql: string, params: unknown[] = []) {
            const result = await client.query(sql, params);
            return result.rows as Row[];
          },
          async exec(sql: string) {
            await client.query(sql);
          },
        });
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}
