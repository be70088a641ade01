/**
 * The runner's findings stream (worker/runner/findings-stream.ts): full batches
 * go at once, a partial one no later than its delay after its first finding,
 * one send at a time, in order. The delay runs on vitest's fake clock, so the
 * test waits for nothing.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FindingsStream } from "../../worker/runner/findings-stream.ts";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function recordingStream(batchSize = 3, maxDelayMs = 2000) {
  const sent: number[][] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  const stream = new FindingsStream<number>({
    batchSize,
    maxDelayMs,
    send: async (batch) => {
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      await Promise.resolve();
      sent.push(batch);
      inFlight--;
      return batch.length;
    },
  });
  return { stream, sent, mostInFlight: () => mostInFlight };
}

describe("sending findings while the analysis goes on", () => {
  it("sends each full batch as soon as it is full, and waits for it", async () => {
    const { stream, sent } = recordingStream(3);
    await stream.add([1, 2, 3, 4, 5, 6, 7]);
    expect(sent).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    expect(await stream.close()).toBe(7);
    expect(sent.at(-1)).toEqual([7]);
  });

  it("sends a partial batch once its first finding has waited the delay, not before", async () => {
    const { stream, sent } = recordingStream(100, 2000);
    await stream.add([1]);
    await vi.advanceTimersByTimeAsync(1000);
    await stream.add([2]);
    await vi.advanceTimersByTimeAsync(999);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([[1, 2]]);

    await stream.add([3]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(sent).toEqual([[1, 2], [3]]);
    expect(await stream.close()).toBe(3);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("keeps one send in flight at a time, in the order found", async () => {
    const { stream, sent, mostInFlight } = recordingStream(2, 10);
    await stream.add([1]);
    vi.advanceTimersByTime(10);
    await stream.add([2, 3, 4]);
    await stream.close();
    expect(sent.flat()).toEqual([1, 2, 3, 4]);
    expect(mostInFlight()).toBe(1);
  });

  it("throws a failed send at the next add and at close, and sends nothing after it", async () => {
    let calls = 0;
    const refused = new Error("CONFLICT: the scan was cancelled");
    const stream = new FindingsStream<number>({
      batchSize: 1,
      maxDelayMs: 2000,
      send: async () => {
        calls++;
        throw refused;
      },
    });
    await expect(stream.add([1])).rejects.toBe(refused);
    await expect(stream.add([2])).rejects.toBe(refused);
    await expect(stream.close()).rejects.toBe(refused);
    expect(calls).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("drops what is waiting when abandoned, and leaves no timer behind", async () => {
    const { stream, sent } = recordingStream(10);
    await stream.add([1, 2]);
    stream.abandon();
    await vi.advanceTimersByTimeAsync(5000);
    expect(sent).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
