/**
 * The alerting rules the README offers (deploy/prometheus/vega-alerts.yml) are
 * a valid Prometheus rule file, and name only metrics Vega exposes.
 * `promtool` comes with Debian's prometheus package (.ci/run installs it).
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { promtoolCheckRules, promtoolPath } from "../support/prometheus.ts";

const rulesFile = fileURLToPath(new URL("../../deploy/prometheus/vega-alerts.yml", import.meta.url));

describe("the alerting rules offered in the README", () => {
  it.skipIf(!promtoolPath)("pass `promtool check rules` (skipped where promtool is missing: apt-get install prometheus)", () => {
    const check = promtoolCheckRules(rulesFile);
    expect(check.status, check.output).toBe(0);
    expect(check.output).toMatch(/SUCCESS: 5 rules found/);
  });

  it("name only metrics that GET /metrics exposes and the README lists", async () => {
    const [rules, readme] = await Promise.all([readFile(rulesFile, "utf8"), readFile(new URL("../../README.md", import.meta.url), "utf8")]);
    const used = new Set(rules.match(/\bvega_[a-z_]+/g));
    expect(used.size).toBeGreaterThan(3);
    for (const name of used) expect(readme, name).toContain(`\`${name}\``);
  });

});
