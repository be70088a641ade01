/**
 * The worker process: registers with the API, heartbeats, and on stop drains
 * (a last heartbeat with draining: true) and deregisters, within
 * VEGA_WORKER_SHUTDOWN_SECONDS. It speaks GraphQL only (worker/api-client.ts):
 * no database, no Prisma.
 *
 * The scan loop (recover stale scans, claim queued ones, launch runners) plugs
 * in as a `ScanLoop`: started once the worker is registered, asked for its
 * active scans at each heartbeat, and stopped first when the worker stops.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../shared/logger.ts";
import { DeregisterWorkerDocument, RegisterWorkerDocument, WorkerHeartbeatDocument } from "./generated/graphql.ts";
import { createApiClient, type ApiClient } from "./api-client.ts";
import { watchQueuedScans, type QueueSignal } from "./queue-signal.ts";
import { nextHeartbeatDelayMs, registrationLost, registrationRefusal, RegistrationRefusedError, retryDelayMs } from "./heartbeat.ts";

export interface WorkerSettings {
  /** The API's GraphQL endpoint (VEGA_API_URL). */
  apiUrl: string;
  /** The deployment's worker token (VEGA_WORKER_TOKEN): used to register; the session token it returns is used after. */
  token: string;
  name: string;
  host: string;
  pid: number;
  version: string;
  capacity: number;
  heartbeatIntervalSeconds: number;
  shutdownSeconds: number;
}

export interface ScanLoop {
  /** Starts taking work; `api` speaks with the worker's current session token. */
  start(api: ApiClient): void;
  /** Scans held now, reported with each heartbeat. */
  activeScans(): number;
  /** Stops taking new work. */
  stop(): Promise<void>;
  /** Looks for work now (a scan was queued), not at the next poll. */
  wake?(): void;
}

interface Registration {
  id: string;
  /** The worker-session token; the deployment token when the API mints none (JWKS). */
  token: string;
}

export class Worker {
  /** Speaks with the session token once registered, with the deployment token before. */
  readonly api: ApiClient;
  private registration: Registration | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The register or heartbeat call in flight, so that stop() does not race it. */
  private inFlight: Promise<void> | undefined;
  private failures = 0;
  /** The scanQueued subscription that wakes the scan loop (queue-signal.ts). */
  private queueSignal: QueueSignal | undefined;
  private scanLoopStarted = false;
  private stopping: Promise<void> | undefined;
  private resolveRegistered!: () => void;
  /** Settles once registered, or when stopped or refused first. */
  private readonly registered = new Promise<void>((resolve) => (this.resolveRegistered = resolve));
  private resolveRefused!: (error: RegistrationRefusedError) => void;
  /** Resolves when the API refuses a registration for good (see registrationRefusal): the worker has stopped trying. */
  readonly refused = new Promise<RegistrationRefusedError>((resolve) => (this.resolveRefused = resolve));

  constructor(
    private readonly settings: WorkerSettings,
    private readonly log: Logger,
    private readonly scanLoop?: ScanLoop,
  ) {
    this.api = createApiClient({ url: settings.apiUrl, token: () => this.registration?.token ?? settings.token });
  }

  /** The registry id, once registered. */
  get id(): string | undefined {
    return this.registration?.id;
  }

  activeScans(): number {
    return this.scanLoop?.activeScans() ?? 0;
  }

  /** Registers (retrying while the failure can heal) and heartbeats from then on. Resolves once registered, stopped or refused. */
  start(): Promise<void> {
    this.run(() => this.register());
    return this.registered;
  }

  /** Stops taking work, sends a last heartbeat with draining: true and deregisters, within shutdownSeconds. */
  stop(): Promise<void> {
    this.stopping ??= this.drain();
    return this.stopping;
  }

  private run(call: () => Promise<void>) {
    this.timer = undefined;
    this.inFlight = call().finally(() => (this.inFlight = undefined));
  }

  private schedule(delayMs: number, call: () => Promise<void>) {
    if (this.stopping) return;
    this.timer = setTimeout(() => this.run(call), delayMs);
  }

  private async register() {
    try {
      const { registerWorker } = await this.api.request(RegisterWorkerDocument, {
        input: {
          name: this.settings.name,
          host: this.settings.host,
          pid: this.settings.pid,
          version: this.settings.version,
          capacity: this.settings.capacity,
        },
      });
      this.registration = { id: registerWorker.worker.id, token: registerWorker.token ?? this.settings.token };
      this.failures = 0;
      this.log.info({ workerId: registerWorker.worker.id, name: registerWorker.worker.name, apiUrl: this.settings.apiUrl }, "worker registered");
      this.resolveRegistered();
      if (!this.scanLoopStarted && !this.stopping) {
        this.scanLoopStarted = true;
        this.scanLoop?.start(this.api);
        const loop = this.scanLoop;
        if (loop?.wake) {
          this.queueSignal = watchQueuedScans({
            apiUrl: this.settings.apiUrl,
            token: () => this.registration?.token ?? this.settings.token,
            onQueued: () => loop.wake!(),
            log: this.log,
          });
        }
      }
      this.schedule(nextHeartbeatDelayMs(this.settings.heartbeatIntervalSeconds), () => this.heartbeat());
    } catch (error) {
      const refusal = registrationRefusal(error, this.settings.apiUrl);
      if (refusal) {
        this.log.error({ err: errorSummary(error) }, `registration refused: ${refusal}`);
        this.resolveRefused(new RegistrationRefusedError(refusal));
        this.resolveRegistered();
        return;
      }
      const retryInMs = retryDelayMs(++this.failures, this.settings.heartbeatIntervalSeconds);
      this.log.warn({ err: errorSummary(error), failures: this.failures, retryInMs }, "registration failed; retrying");
      this.schedule(retryInMs, () => this.register());
    }
  }

  private async heartbeat() {
    const registration = this.registration!;
    try {
      await this.api.request(WorkerHeartbeatDocument, {
        id: registration.id,
        input: { activeScans: this.activeScans(), draining: false },
      });
      this.failures = 0;
      this.schedule(nextHeartbeatDelayMs(this.settings.heartbeatIntervalSeconds), () => this.heartbeat());
    } catch (error) {
      if (registrationLost(error)) {
        this.log.warn({ err: errorSummary(error), workerId: registration.id }, "the API no longer knows this worker; registering again");
        this.registration = undefined;
        this.schedule(0, () => this.register());
        return;
      }
      const retryInMs = retryDelayMs(++this.failures, this.settings.heartbeatIntervalSeconds);
      this.log.warn({ err: errorSummary(error), workerId: registration.id, failures: this.failures, retryInMs }, "heartbeat failed; retrying");
      this.schedule(retryInMs, () => this.heartbeat());
    }
  }

  private async drain() {
    const deadline = Date.now() + this.settings.shutdownSeconds * 1000;
    const remainingMs = () => Math.max(1, deadline - Date.now());
    clearTimeout(this.timer);
    this.resolveRegistered();
    // Let a call in flight finish first: a late draining: false must not land after draining: true.
    await within(this.inFlight, remainingMs());
    await within(this.queueSignal?.close(), remainingMs());
    await within(this.scanLoop?.stop(), remainingMs());
    const registration = this.registration;
    if (!registration) {
      this.log.info("worker stopped while not registered");
      return;
    }
    try {
      await this.api.request(
        WorkerHeartbeatDocument,
        { id: registration.id, input: { activeScans: this.activeScans(), draining: true } },
        { timeoutMs: remainingMs() },
      );
      await this.api.request(DeregisterWorkerDocument, { id: registration.id }, { timeoutMs: remainingMs() });
      this.log.info({ workerId: registration.id }, "worker drained and deregistered");
    } catch (error) {
      this.log.warn(
        { err: errorSummary(error), workerId: registration.id },
        "could not deregister before stopping; the registry will report this worker stale",
      );
    }
  }
}

/** Waits for `promise`, or `ms`, whichever comes first; never throws. */
async function within(promise: Promise<unknown> | undefined, ms: number) {
  if (!promise) return;
  const timeout = new AbortController();
  await Promise.race([promise.catch(() => {}), sleep(ms, undefined, { signal: timeout.signal }).catch(() => {})]);
  timeout.abort();
}

const errorSummary = (error: unknown) => (error instanceof Error ? { name: error.name, message: error.message } : { message: String(error) });
