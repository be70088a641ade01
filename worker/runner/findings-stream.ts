/**
 * Findings on their way to the API while the analysis goes on: a batch is sent
 * as soon as VEGA_RUNNER_FINDINGS_BATCH findings are waiting, and whatever is
 * waiting is sent at most `maxDelayMs` (2 s) after the first of it was found,
 * so a runner that crashes keeps everything it found more than a couple of
 * seconds before. One batch in flight at a time, in the order found.
 *
 * `add` waits for full batches to be sent: a slow API slows the analysis down
 * instead of piling findings up in memory. A failed send (after the sender's
 * own retries) is remembered and thrown by the next `add` or by `close`.
 */
export interface FindingsStreamOptions<T> {
  /** Sends one batch; answers how many the API added (duplicates are not). */
  send(batch: T[]): Promise<number>;
  batchSize: number;
  maxDelayMs: number;
}

export class FindingsStream<T> {
  private pending: T[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();
  private failure: { error: unknown } | undefined;
  /** Findings the API added so far. */
  added = 0;

  constructor(private readonly options: FindingsStreamOptions<T>) {}

  async add(findings: T[]): Promise<void> {
    this.throwIfFailed();
    if (findings.length === 0) return;
    this.pending.push(...findings);
    while (this.pending.length >= this.options.batchSize) {
      await this.sendBatch(this.pending.splice(0, this.options.batchSize));
      this.throwIfFailed();
    }
    if (this.pending.length > 0 && !this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.sendBatch(this.pending.splice(0));
      }, this.options.maxDelayMs);
    }
  }

  /** Sends what is left and answers the count the API added; throws what a send failed with. */
  async close(): Promise<number> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.pending.length > 0) await this.sendBatch(this.pending.splice(0, this.options.batchSize));
    await this.sending;
    this.throwIfFailed();
    return this.added;
  }

  /** Drops what is waiting (the scan ended elsewhere, nothing more is accepted). */
  abandon(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = [];
  }

  private sendBatch(batch: T[]): Promise<void> {
    if (batch.length === 0) return this.sending;
    this.sending = this.sending.then(async () => {
      if (this.failure) return;
      try {
        this.added += await this.options.send(batch);
      } catch (error) {
        this.failure = { error };
        // Nothing is sent after a failure: no timer may keep the process alive for a batch that will not go.
        this.abandon();
      }
    });
    return this.sending;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}
