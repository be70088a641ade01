import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, settings } from "../../shared/config.ts";
import { runVega } from "../support/cli.ts";

describe("settings", () => {
  it("defaults to DESIGN.md's limits", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      maxActiveScansPerUser: 4,
      maxSessionsPerWorkspace: 20,
      maxSourceBytes: 2147483648,
      maxArchiveEntries: 50000,
      maxArchiveUncompressedBytes: 5368709120,
      workerHeartbeatIntervalSeconds: 15,
      workerHeartbeatTtlSeconds: 60,
      scanRunningStaleSeconds: 21600,
      launcher: "local",
      opsGroups: ["vega-ops"],
    });
    expect(config.databaseUrl).toBeUndefined();
  });

  it.each([
    ["VEGA_MAX_ACTIVE_SCANS_PER_USER", "abc"],
    ["VEGA_MAX_SOURCE_BYTES", "-1"],
    ["VEGA_MAX_ARCHIVE_ENTRIES", "1.5"],
    ["VEGA_LAUNCHER", "kubernetes"],
    ["VEGA_DATABASE_URL", "mysql://localhost/vega"],
    ["VEGA_ECS_ASSIGN_PUBLIC_IP", "maybe"],
    ["VEGA_PORT", ""],
  ])("refuses %s=%j, naming the variable and the value", (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`${name}=${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  });

  it("reports every invalid value at once", () => {
    expect(() => loadConfig({ VEGA_MAX_ACTIVE_SCANS_PER_USER: "x", VEGA_LAUNCHER: "y" })).toThrow(
      /VEGA_MAX_ACTIVE_SCANS_PER_USER[\s\S]*VEGA_LAUNCHER/,
    );
  });

  it("refuses a heartbeat TTL that is not longer than the interval", () => {
    expect(() => loadConfig({ VEGA_WORKER_HEARTBEAT_INTERVAL_SECONDS: "30", VEGA_WORKER_HEARTBEAT_TTL_SECONDS: "30" })).toThrow(
      /VEGA_WORKER_HEARTBEAT_TTL_SECONDS/,
    );
  });

  it("lists every setting in the README", async () => {
    const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
    for (const spec of Object.values(settings)) expect(readme, spec.env).toContain(`\`${spec.env}\``);
  });
});

describe("an invalid setting stops the process at start", () => {
  it("exits non-zero at once, naming the variable", async () => {
    const result = await runVega(["start"], { VEGA_MAX_ACTIVE_SCANS_PER_USER: "abc" });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('VEGA_MAX_ACTIVE_SCANS_PER_USER="abc"');
  });
});
