import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // Node resolves `graphql` to its CommonJS build (no "exports" field), Vite to its ESM
    // build ("module"): one realm for both, or graphql-js refuses types "from another realm".
    alias: [{ find: /^graphql$/, replacement: "graphql/index.js" }],
  },
  test: {
    include: ["test/**/*.test.ts"],
    // Each file starts its own server and database; two cores run two files at once.
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests that spawn `vega` processes read this to find the binary.
    env: { VEGA_LOG_LEVEL: "warn" },
  },
});
