import { readFileSync } from "node:fs";

/** Vega's version, from package.json: reported by workers and in SARIF's tool.driver.version. */
export const vegaVersion: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;
