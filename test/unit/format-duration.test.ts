/** formatDuration (api/services/diagnostics.ts): how long, as the diagnostics summaries say it. */
import { describe, expect, it } from "vitest";
import { formatDuration } from "../../api/services/diagnostics.ts";

describe("formatDuration", () => {
  it.each([
    [0, "0s"],
    [0.9, "0s"],
    [45, "45s"],
    [60, "1m"],
    [61, "1m 1s"],
    [3600, "1h"],
    [3600 + 12 * 60 + 30, "1h 12m"],
    [86_400, "1d"],
    [86_400 + 3600 + 59, "1d 1h"],
    [2 * 86_400 + 59, "2d"],
  ])("says %s seconds as %s", (seconds, expected) => {
    expect(formatDuration(seconds)).toBe(expected);
  });

  it("shows at most the two largest units, and never a zero one", () => {
    expect(formatDuration(86_400 + 60 + 1)).toBe("1d");
    expect(formatDuration(3 * 3600 + 5)).toBe("3h");
  });

  it("says a negative duration (a clock ahead of ours) as 0s", () => {
    expect(formatDuration(-30)).toBe("0s");
  });
});
