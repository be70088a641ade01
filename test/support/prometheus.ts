/**
 * Reading a Prometheus exposition in tests with a real parser
 * (parse-prometheus-text-format, a port of the Python client's parser), and
 * linting it with `promtool check metrics` when Debian's prometheus package is
 * installed (.ci/run installs it).
 */
import { spawnSync } from "node:child_process";
import parsePrometheusTextFormat from "parse-prometheus-text-format";

export interface Sample {
  labels?: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
  metrics: Sample[];
}

export function parseExposition(text: string): Map<string, MetricFamily> {
  const families = parsePrometheusTextFormat(text) as MetricFamily[];
  return new Map(families.map((family) => [family.name, family]));
}

/** The sample of `name` whose labels include `labels`; its value as a number (0 when absent: a counter not yet incremented). */
export function valueOf(families: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name);
  const sample = family?.metrics.find((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value));
  if (!sample) return 0;
  return Number(sample.value ?? sample.count);
}

/**
 * The `_count`, `_sum` and `_bucket` series of a histogram, each with all its
 * labels. The parser folds a histogram's series into one sample and loses
 * labels other than `le` (its flattenMetrics handles unlabelled histograms
 * only), so these lines are parsed on their own, as untyped series.
 */
export function histogramSeries(text: string, name: string) {
  // Grouped by series name: the parser starts a new family at each change of name.
  const lines = ["count", "sum", "bucket"].flatMap((suffix) => text.split("\n").filter((line) => new RegExp(`^${name}_${suffix}[{ ]`).test(line)));
  const families = parsePrometheusTextFormat(lines.join("\n") + "\n") as MetricFamily[];
  const series = (suffix: string) => families.find((family) => family.name === `${name}_${suffix}`)?.metrics ?? [];
  const pick = (suffix: string, labels: Record<string, string>) =>
    series(suffix).find((metric) => Object.entries(labels).every(([key, value]) => metric.labels?.[key] === value));
  return {
    count: (labels: Record<string, string> = {}) => Number(pick("count", labels)?.value ?? 0),
    sum: (labels: Record<string, string> = {}) => Number(pick("sum", labels)?.value ?? 0),
    bucket: (le: string, labels: Record<string, string> = {}) => Number(pick("bucket", { ...labels, le })?.value ?? 0),
  };
}

export const promtoolPath = (() => {
  const found = spawnSync("sh", ["-c", "command -v promtool"], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.trim() : undefined;
})();

/** `promtool check metrics` on the exposition: its exit status and what it said. */
export function promtoolCheckMetrics(text: string) {
  const result = spawnSync(promtoolPath!, ["check", "metrics"], { input: text, encoding: "utf8" });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

export function promtoolCheckRules(file: string) {
  const result = spawnSync(promtoolPath!, ["check", "rules", file], { encoding: "utf8" });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}
