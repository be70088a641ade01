declare module "parse-prometheus-text-format" {
  /** Families in the shape of prom2json: { name, help, type, metrics: [{ labels, value } | { labels, buckets, count, sum }] }. */
  export default function parsePrometheusTextFormat(text: string): unknown[];
}
