/**
 * A VEGA_DATA_DIR for a `vega` process a test starts: a new temporary directory
 * whose embedded database is a copy of the run's migrated template
 * (./global-setup.ts), so the process opens it as it would a directory of an
 * earlier run, instead of paying PGlite's initdb and every migration. Tests of
 * a fresh directory itself (migrations, `npm start` on a new clone, the data
 * directory's lock) make theirs with mkdtemp.
 */
import { cp, mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

/** Where ./global-setup.ts left the migrated data directory (here, so that using it imports no database code). */
export const PGLITE_DATA_DIR_TEMPLATE_ENV = "VEGA_TEST_PGLITE_DATA_DIR_TEMPLATE";

export async function migratedDataDir(prefix: string): Promise<string> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await seedDataDir(dataDir);
  return dataDir;
}

/**
 * Seeds `dataDir` (which has no embedded database yet) with a copy of the migrated template.
 * Without a template (a file run outside vitest's projects), the process migrates its own.
 */
export async function seedDataDir(dataDir: string): Promise<void> {
  const template = process.env[PGLITE_DATA_DIR_TEMPLATE_ENV];
  if (template) await cp(template, path.join(dataDir, "pglite"), { recursive: true });
}
