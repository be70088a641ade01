/**
 * Severities (shared/severity.ts): one list, most severe first, the same as the
 * database's enum (whose order is what `ORDER BY severity` follows), and the
 * SARIF level and GitHub security-severity of each.
 */
import { describe, expect, it } from "vitest";
import { Severity as PrismaSeverity } from "../../api/generated/prisma/enums.ts";
import { SECRET_RULES } from "../../shared/secret-rules.ts";
import {
  SARIF_LEVEL_BY_SEVERITY,
  SECURITY_SEVERITY_BY_SEVERITY,
  SEVERITIES,
  compareSeverity,
  sarifLevelOf,
  type Severity,
} from "../../shared/severity.ts";
import { enumValuesInMigrations } from "../support/enum-migrations.ts";

describe("the severity order", () => {
  it("sorts the most severe first", () => {
    const shuffled: Severity[] = ["LOW", "CRITICAL", "INFO", "MEDIUM", "HIGH"];
    expect(shuffled.sort(compareSeverity)).toEqual(["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"]);
    expect([...SEVERITIES]).toEqual(["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"]);
  });

  it("ranks GitHub's security-severity in the same order, with none for INFO", () => {
    const scores = SEVERITIES.map((severity) => SECURITY_SEVERITY_BY_SEVERITY[severity]);
    expect(scores.at(-1)).toBeUndefined();
    const numeric = scores.slice(0, -1).map(Number);
    expect(numeric).toEqual([...numeric].sort((a, b) => b - a));
    // GitHub's bands: critical above 9.0, high 7.0 to 8.9, medium 4.0 to 6.9, low below 4.0.
    expect(numeric[0]).toBeGreaterThan(9);
    expect(numeric[1]).toBeGreaterThanOrEqual(7);
    expect(numeric[1]).toBeLessThan(9);
    expect(numeric[2]).toBeGreaterThanOrEqual(4);
    expect(numeric[2]).toBeLessThan(7);
    expect(numeric[3]).toBeLessThan(4);
  });
});

describe("SARIF levels", () => {
  it("makes CRITICAL and HIGH errors, MEDIUM a warning, LOW and INFO notes", () => {
    expect(SARIF_LEVEL_BY_SEVERITY).toEqual({ CRITICAL: "error", HIGH: "error", MEDIUM: "warning", LOW: "note", INFO: "note" });
    for (const severity of SEVERITIES) expect(sarifLevelOf(severity)).toBe(SARIF_LEVEL_BY_SEVERITY[severity]);
  });

  it("reads a severity it does not know (a row of an older runner) as a warning", () => {
    expect(sarifLevelOf("SEVERE")).toBe("warning");
  });

  it("knows the severity of every rule in the catalogue", () => {
    for (const rule of SECRET_RULES) expect(SEVERITIES, rule.id).toContain(rule.severity);
  });
});

describe("the severities are the database's", () => {
  it("match the generated Prisma enum and the PostgreSQL enum the migrations create, in order", () => {
    expect(Object.values(PrismaSeverity)).toEqual([...SEVERITIES]);
    expect(enumValuesInMigrations("Severity")).toEqual([...SEVERITIES]);
  });
});
