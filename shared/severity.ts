/**
 * Finding severities: the list, its order, and what each means in SARIF. The
 * runner's rule catalogue, the GraphQL enum, the finding counts and the SARIF
 * report all read this list; the PostgreSQL enum "Severity" (prisma/schema.prisma)
 * holds the same names in the same order, which is what makes
 * `ORDER BY severity ASC` read most severe first (test/unit/severity.test.ts
 * checks both).
 */
export const SEVERITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"] as const;

export type Severity = (typeof SEVERITIES)[number];

/** Negative when `a` is more severe than `b`: sorting with it puts the most severe first. */
export function compareSeverity(a: Severity, b: Severity): number {
  return SEVERITIES.indexOf(a) - SEVERITIES.indexOf(b);
}

export type SarifLevel = "error" | "warning" | "note";

/** SARIF `level`: CRITICAL and HIGH are errors, MEDIUM a warning, LOW and INFO notes. */
export const SARIF_LEVEL_BY_SEVERITY: Readonly<Record<Severity, SarifLevel>> = {
  CRITICAL: "error",
  HIGH: "error",
  MEDIUM: "warning",
  LOW: "note",
  INFO: "note",
};

/**
 * GitHub's `security-severity` (critical above 9.0, high 7.0 to 8.9, medium 4.0
 * to 6.9, low below 4.0); INFO gets none, so GitHub does not rank it as a
 * security alert.
 */
export const SECURITY_SEVERITY_BY_SEVERITY: Readonly<Record<Severity, string | undefined>> = {
  CRITICAL: "9.5",
  HIGH: "8.0",
  MEDIUM: "5.5",
  LOW: "3.0",
  INFO: undefined,
};

/** The SARIF level of a stored severity; a name this list does not know (an older row) reads as a warning. */
export function sarifLevelOf(severity: string): SarifLevel {
  return (SARIF_LEVEL_BY_SEVERITY as Record<string, SarifLevel | undefined>)[severity] ?? "warning";
}
