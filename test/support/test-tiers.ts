/**
 * Which test files run on both databases. The rule is read from the imports, so
 * that no list has to be kept: a test file whose imports reach
 * test/support/database.ts (directly or through other support files: a test
 * server, a `vega serve` process, fixtures) gets the test database, and its
 * result depends on VEGA_TEST_DATABASE_URL (so does a file that names that
 * variable itself); `import type` does not count. Every other file gives the same
 * result on either pass, so `.ci/run` runs it once. vitest.config.ts turns
 * this into two projects, "database" and "plain".
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { importSpecifiers } from "./import-graph.ts";

/** The one module that reads VEGA_TEST_DATABASE_URL and opens test databases. */
export const TEST_DATABASE_MODULE = "test/support/database.ts";

function testFiles(root: string, dir = "test"): string[] {
  return readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const relative = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "generated" || entry.name === "fixtures" ? [] : testFiles(root, relative);
    return entry.name.endsWith(".test.ts") ? [relative] : [];
  });
}

/** Relative imports of a file, as paths from the root (TypeScript sources only). */
function localImports(root: string, file: string): string[] {
  // `import type` brings no code: a file that only names the test server's type does not open a database.
  const source = readFileSync(path.join(root, file), "utf8").replace(/^\s*import\s+type\s[^;]*?from\s*["'][^"']+["'];?/gm, "");
  return importSpecifiers(source)
    .filter((specifier) => specifier.startsWith("."))
    .map((specifier) => path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier)))
    // A test's own fixtures may hold import lines as text (the architecture test's sample sources).
    .filter((target) => target.endsWith(".ts") && !target.startsWith("..") && existsSync(path.join(root, target)));
}

/** Whether `file` imports the test database module, or a file that does, however far down. */
function reachesTestDatabase(root: string, file: string, seen = new Map<string, boolean>()): boolean {
  if (file === TEST_DATABASE_MODULE) return true;
  const known = seen.get(file);
  if (known !== undefined) return known;
  seen.set(file, false);
  // A file that reads the variable itself counts too, whatever it imports.
  const reaches = readFileSync(path.join(root, file), "utf8").includes("VEGA_TEST_DATABASE_URL") || localImports(root, file).some((target) => reachesTestDatabase(root, target, seen));
  seen.set(file, reaches);
  return reaches;
}

/** Test files (paths from the root) split by whether they use the test database. */
export function testTiers(root: string): { database: string[]; plain: string[] } {
  const seen = new Map<string, boolean>();
  const database: string[] = [];
  const plain: string[] = [];
  for (const file of testFiles(root)) (reachesTestDatabase(root, file, seen) ? database : plain).push(file);
  return { database, plain };
}
