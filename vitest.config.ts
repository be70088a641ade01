import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";
import { testTiers } from "./test/support/test-tiers.ts";

// Test files that use the test database (their imports reach test/support/database.ts) form the
// "database" project; the others, "plain", give the same result on PGlite and PostgreSQL, so CI's
// PostgreSQL pass runs `--project database` only. `npm test` runs both.
const tiers = testTiers(fileURLToPath(new URL(".", import.meta.url)));

export default defineConfig({
  resolve: {
    // Node resolves `graphql` to its CommonJS build (no "exports" field), Vite to its ESM
    // build ("module"): one realm for both, or graphql-js refuses types "from another realm".
    alias: [{ find: /^graphql$/, replacement: "graphql/index.js" }],
  },
  test: {
    // Each file starts its own server and database; two cores run two files at once.
    pool: "forks",
    // Files share their worker process (and its loaded modules) rather than each importing the
    // server, the SDKs and yoga again in a fresh one: 2.6 s a file in CI, 190 s of a pass. Every
    // file starts and stops its own servers, databases and processes, and restores what it changes.
    isolate: false,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests that spawn `vega` processes read this to find the binary.
    env: { VEGA_LOG_LEVEL: "warn" },
    projects: [
      // One migrated template database per run, copied for each test database and for the data
      // directory of each `vega` process the tests start.
      { extends: true, test: { name: "database", include: tiers.database, globalSetup: ["test/support/global-setup.ts"] } },
      { extends: true, test: { name: "plain", include: tiers.plain, globalSetup: ["test/support/global-setup.ts"] } },
    ],
  },
});
