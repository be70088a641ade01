/**
 * The values of a PostgreSQL enum as the migrations create it, in order: the
 * order PostgreSQL sorts and compares them by. Read from prisma/migrations
 * without a database; a migration that alters the type is reported, since its
 * order could then differ from what CREATE TYPE says.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

const MIGRATIONS = path.resolve(import.meta.dirname, "../../prisma/migrations");

export function enumValuesInMigrations(typeName: string): string[] {
  const sql = readdirSync(MIGRATIONS)
    .sort()
    .map((dir) => path.join(MIGRATIONS, dir, "migration.sql"))
    .map((file) => {
      try {
        return readFileSync(file, "utf8");
      } catch {
        return "";
      }
    })
    .join("\n");
  if (new RegExp(`ALTER TYPE "${typeName}"`).test(sql)) throw new Error(`a migration alters "${typeName}": read its order from a database`);
  const created = new RegExp(`CREATE TYPE "${typeName}" AS ENUM \\(([^)]*)\\)`).exec(sql);
  if (!created) throw new Error(`no migration creates "${typeName}"`);
  return created[1].split(",").map((value) => value.trim().replace(/^'|'$/g, ""));
}
