/**
 * The rule that decides which test files CI runs again on PostgreSQL
 * (test/support/test-tiers.ts): every file that can reach the test database
 * is in the "database" project, and only those.
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { testTiers } from "../support/test-tiers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const tiers = testTiers(root);

describe("the database and plain test projects", () => {
  it("puts a file in database when its imports reach test/support/database.ts, however indirectly", () => {
    // Directly, through the test server, through `vega serve`, through fixtures.
    expect(tiers.database).toEqual(expect.arrayContaining(["test/integration/migrations.test.ts", "test/integration/auth.test.ts", "test/integration/hostile-uploads.test.ts", "test/unit/quota.test.ts"]));
  });

  it("leaves in plain the files that never open the test database (a type-only import does not count)", () => {
    // end-to-end.test.ts names the TestServer type only, through support/uploads.ts.
    expect(tiers.plain).toEqual(expect.arrayContaining(["test/unit/architecture.test.ts", "test/integration/end-to-end.test.ts", "test/unit/format-duration.test.ts"]));
  });

  it("splits every test file into exactly one of the two", () => {
    expect(tiers.database.filter((file) => tiers.plain.includes(file))).toEqual([]);
    expect(tiers.database.length + tiers.plain.length).toBeGreaterThan(50);
  });
});
