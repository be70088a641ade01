/**
 * GraphQL multipart requests (the upload spec), streamed: yoga would buffer
 * every file in memory before a resolver runs, which cannot serve 2 GB
 * archives. Here our parser (multipart-parser.ts) reads `operations` and `map` (which the spec sends
 * first), the file part streams to a temporary file in the artifact store in
 * 1 MiB blocks, hashed on a thread of its own and counted (upload-file.ts), and the operation then runs with a placeholder in
 * place of the File; the resolver finds the stored file in the context.
 *
 * Checks come before any work, in this order: CSRF preflight header,
 * authentication, the active-scan quota (from the token alone, before the body
 * is read), the declared size, then, from `operations` and `map`, the map's
 * targets and workspace membership, then the size while streaming. Every
 * refusal, a client that goes away at any byte and one that stalls for
 * VEGA_UPLOAD_IDLE_SECONDS remove what was written and close its file at once.
 */
import { open, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import type { GraphQLError } from "graphql";
import { authenticate, type Deps } from "../context.ts";
import { badUserInput, errorCodeOf, requestTimeout, sourceTooLarge, unauthenticated, vegaError } from "../../shared/errors.ts";
import { checkActiveScanQuota } from "../services/quota.ts";
import type { StoredUpload } from "../services/uploads.ts";
import { resolveMemberWorkspace } from "../services/users.ts";
import type { VegaYoga } from "./graphql.ts";
import { MultipartError, MultipartParser, type FilePartInfo } from "./multipart-parser.ts";
import { uploadFileSink } from "./upload-file.ts";
import { ClientGoneError, refuseAndClose, refuseRequest, sendWebResponse, startReadingBody, watchBodyIdle } from "./respond.ts";

/** Room for the `operations` and `map` fields and part headers around the file itself. */
const FORM_OVERHEAD_BYTES = 1024 * 1024;

/** Apollo Server's CSRF rule: a multipart post must carry a header a browser cannot send cross-site without preflight. */
const PREFLIGHT_HEADERS = ["apollo-require-preflight", "x-apollo-operation-name", "graphql-preflight"];

/** Names that lead out of plain JSON data into an object's prototype chain. */
const PROTOTYPE_KEYS = new Set(["__proto__", "constructor", "prototype"]);

class UploadRefused extends Error {
  constructor(
    readonly error: GraphQLError,
    /** The client stopped sending: answer and close rather than linger for a body that does not come. */
    readonly closeConnection = false,
  ) {
    super(error.message);
  }
}

type Operations = { query?: unknown; variables?: Record<string, unknown>; operationName?: unknown };

interface ParsedForm {
  operations: Operations;
  uploads: Map<string, StoredUpload>;
}

export async function handleMultipartGraphQL(
  deps: Deps,
  yoga: VegaYoga,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  requestId: string,
) {
  const refuse = (error: GraphQLError) => {
    deps.metrics.countSubmissionRefusal(error);
    return refuseRequest(req, res, error);
  };

  if (!PREFLIGHT_HEADERS.some((name) => typeof req.headers[name] === "string" && req.headers[name] !== "")) {
    return refuse(
      badUserInput(
        "Multipart requests must carry a non-empty `Apollo-Require-Preflight` (or `GraphQL-Preflight`) header " +
          "(CSRF protection)",
      ),
    );
  }

  let viewer;
  try {
    viewer = await authenticate(deps, req.headers.authorization);
  } catch (error) {
    if (errorCodeOf(error)) return refuse(error as GraphQLError);
    throw error;
  }
  if (!viewer?.user) return refuse(viewer ? vegaError("FORBIDDEN", "Only users submit scans") : unauthenticated("A bearer token is required"));

  const quotaRefusal = await checkActiveScanQuota(deps, viewer).catch((error: unknown) => error);
  if (quotaRefusal) {
    if (errorCodeOf(quotaRefusal)) return refuse(quotaRefusal as GraphQLError);
    throw quotaRefusal;
  }

  const declaredLength = Number(req.headers["content-length"]);
  if (Number.isFinite(declaredLength) && declaredLength > deps.config.maxSourceBytes + FORM_OVERHEAD_BYTES) {
    return refuse(sourceTooLarge({ limit: deps.config.maxSourceBytes, size: declaredLength }));
  }

  let form: ParsedForm;
  try {
    form = await new MultipartUpload(deps, req, res, async (operations) => {
      const workspaceId = findWorkspaceId(operations.variables);
      if (workspaceId) await resolveMemberWorkspace(deps, viewer, workspaceId);
    }).parse();
  } catch (error) {
    if (error instanceof ClientGoneError) return;
    if (error instanceof UploadRefused) {
      if (!error.closeConnection) return refuse(error.error);
      deps.metrics.countSubmissionRefusal(error.error);
      return refuseAndClose(res, error.error);
    }
    throw error;
  }

  let response: Response;
  try {
    response = await yoga.fetch(
      new Request(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: req.headers.accept ?? "application/json" },
        body: JSON.stringify(form.operations),
      }),
      { vega: { requestId, uploads: form.uploads, viewer } },
    );
  } finally {
    // Whatever the operation did not take into the store (a refusal, an error) is removed before the client hears back.
    await Promise.all([...form.uploads.values()].map((upload) => rm(upload.tempPath, { force: true })));
  }
  await sendWebResponse(res, response);
}

/** The workspace a submitScan names, if any, so membership is checked before the file is read. */
function findWorkspaceId(variables: Record<string, unknown> | undefined): string | undefined {
  const input = variables && Object.hasOwn(variables, "input") ? variables.input : undefined;
  if (input && typeof input === "object" && Object.hasOwn(input, "workspaceId")) {
    const workspaceId = (input as Record<string, unknown>).workspaceId;
    if (typeof workspaceId === "string") return workspaceId;
  }
  return undefined;
}

/**
 * One multipart body read into `operations`, `map` and the file, the file
 * streamed to a temporary file of the store. The parser's calls arrive in body
 * order; each has its method here, and the state they share is the fields.
 * `parse()` settles once the body is read (or refused; then every temporary
 * file is removed first).
 */
class MultipartUpload {
  private operations: Operations | undefined;
  private targets: Map<string, MapTarget[]> | undefined;
  /** The check `beforeFiles` makes once `map` is read; file parts wait for it. */
  private ready: Promise<void> | undefined;
  private readonly uploads = new Map<string, StoredUpload>();
  private readonly writes: Promise<void>[] = [];
  private readonly tempPaths: string[] = [];
  private readonly fileStreams: Readable[] = [];
  private readonly bodyLimit: number;
  private received = 0;
  private failed = false;
  private parser: MultipartParser | undefined;
  private stopIdleWatch: () => void = () => {};
  private resolve!: (form: ParsedForm) => void;
  private reject!: (error: unknown) => void;

  constructor(
    private readonly deps: Pick<Deps, "config" | "artifacts" | "metrics">,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly beforeFiles: (operations: Operations) => Promise<void>,
  ) {
    const { config } = deps;
    this.bodyLimit = config.maxSourceBytes + FORM_OVERHEAD_BYTES;
  }

  parse(): Promise<ParsedForm> {
    const { req, res } = this;
    const { config } = this.deps;
    if (req.destroyed && !req.complete) return Promise.reject(new ClientGoneError());
    return new Promise<ParsedForm>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      let parser: MultipartParser;
      try {
        parser = new MultipartParser(
          req.headers["content-type"],
          { fileSize: config.maxSourceBytes, fieldSize: FORM_OVERHEAD_BYTES, files: 1, fields: 2 },
          { field: (name, value) => this.onField(name, value), file: (fieldName, stream, info) => this.onFile(fieldName, stream, info) },
        );
      } catch (error) {
        return reject(wrapRefusal(error));
      }
      this.parser = parser;
      parser.on("error", (error: unknown) => this.fail(wrapRefusal(error)));
      parser.on("finish", () => this.onClose());
      req.once("close", () => {
        if (!req.complete) this.fail(new ClientGoneError());
      });
      startReadingBody(req, res);
      req.pipe(parser);
      req.on("data", this.countBytes);
      this.stopIdleWatch = watchBodyIdle(req, config.uploadIdleSeconds, () =>
        this.fail(new UploadRefused(requestTimeout({ idleSeconds: config.uploadIdleSeconds }), true)),
      );
    });
  }

  /** The declared length was checked; a body sent without one (chunked) is held to the same bound as it streams. */
  private readonly countBytes = (chunk: Buffer) => {
    this.received += chunk.length;
    if (this.received > this.bodyLimit) this.fail(new UploadRefused(sourceTooLarge({ limit: this.deps.config.maxSourceBytes })));
  };

  private onField(name: string, value: string) {
    if (this.failed) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      return this.fail(new UploadRefused(badUserInput(`The multipart field \`${name}\` is not valid JSON`)));
    }
    if ((name === "operations" && this.operations) || (name === "map" && this.targets)) {
      return this.fail(new UploadRefused(badUserInput(`The multipart field \`${name}\` is sent twice`)));
    }
    if (name === "operations") {
      if (!isPlainObject(parsed)) {
        return this.fail(new UploadRefused(badUserInput("The multipart field `operations` must be one operation, a JSON object (batches are not supported)")));
      }
      this.operations = parsed;
    } else if (name === "map") {
      if (!this.operations) {
        return this.fail(new UploadRefused(badUserInput("Multipart requests must send `operations` before `map`, per the GraphQL multipart request spec")));
      }
      try {
        this.targets = readUploadMap(this.operations, parsed);
      } catch (error) {
        return this.fail(error);
      }
      this.ready = this.beforeFiles(this.operations);
      // Awaited later (by the file part or at close); marked handled now so an early refusal is not an unhandled rejection.
      this.ready.catch(() => {});
    }
  }

  private onFile(fieldName: string, stream: Readable, info: FilePartInfo) {
    // The stream can be errored before the pipeline below is attached (the size limit, while membership is
    // still being checked, with a limit under the stream's 1 MiB of room), or with none attached (the parser
    // destroyed mid-file, for an upload already refused). The pipeline finds it errored and rejects with the
    // error; until then, and without one, this listener keeps the error handled.
    stream.on("error", () => {});
    if (this.failed) return stream.resume();
    this.fileStreams.push(stream);
    const { targets, ready } = this;
    if (!this.operations || !targets || !ready) {
      stream.resume();
      return this.fail(
        new UploadRefused(badUserInput("Multipart requests must send `operations` and `map` before the files, per the GraphQL multipart request spec")),
      );
    }
    const fileTargets = targets.get(fieldName);
    if (!fileTargets) {
      stream.resume();
      return this.fail(new UploadRefused(badUserInput(`The file part \`${fieldName}\` is not named in \`map\``, { field: fieldName })));
    }
    const { config, artifacts, metrics } = this.deps;
    const tempPath = artifacts.tempPath("upload");
    stream.on("limit", () => {
      // The parser stops at VEGA_MAX_SOURCE_BYTES: the upload is refused and its partial file removed.
      stream.destroy(new UploadRefused(sourceTooLarge({ limit: config.maxSourceBytes })));
    });
    const placeholder = `vega-upload:${fieldName}`;
    this.writes.push(
      ready
        .then(async () => {
          // Nothing is created for an upload that failed while membership was checked.
          if (this.failed) return;
          this.tempPaths.push(tempPath);
          // Opened here rather than by the stream: a stream destroyed while it is still opening would
          // create its file after the failure's removal ran. Its close is awaited (the stream closes it).
          const file = await open(tempPath, "wx");
          let written;
          try {
            const { sink, finished } = uploadFileSink(file, (bytes) => metrics.countUploadBytes(bytes));
            await pipeline(stream, sink);
            written = await finished();
          } finally {
            await file.close();
          }
          this.uploads.set(placeholder, {
            placeholder,
            tempPath,
            fileName: info.filename || "source.zip",
            mimeType: info.mimeType,
            sizeBytes: written.sizeBytes,
            sha256: written.sha256,
          });
          for (const target of fileTargets) target.holder[target.key] = placeholder;
        })
        .catch((error: unknown) => {
          stream.resume();
          this.fail(wrapRefusal(error));
        }),
    );
  }

  private onClose() {
    Promise.all([this.ready, ...this.writes]).then(
      () => {
        if (this.failed) return;
        const { operations, targets, uploads } = this;
        if (!operations || !targets) return this.fail(new UploadRefused(badUserInput("Multipart requests need `operations` and `map` fields")));
        const missing = [...targets.keys()].filter((fieldName) => !uploads.has(`vega-upload:${fieldName}`));
        if (missing.length > 0) {
          return this.fail(
            new UploadRefused(
              badUserInput(`\`map\` names the file part \`${missing[0]}\`, but the request has no such file part`, { field: missing[0] }),
            ),
          );
        }
        this.stopIdleWatch();
        this.req.off("data", this.countBytes);
        this.resolve({ operations, uploads });
      },
      (error: unknown) => this.fail(wrapRefusal(error)),
    );
  }

  private fail(error: unknown) {
    if (this.failed) return;
    this.failed = true;
    this.stopIdleWatch();
    this.req.off("data", this.countBytes);
    if (this.parser) this.req.unpipe(this.parser);
    // A file stream the parser no longer feeds never ends: destroying it fails its pipeline, which closes the file.
    for (const stream of this.fileStreams) stream.destroy();
    Promise.allSettled(this.writes)
      .then(() => Promise.all(this.tempPaths.map((file) => rm(file, { force: true }))))
      .finally(() => this.reject(error));
  }
}

function wrapRefusal(error: unknown): unknown {
  if (error instanceof UploadRefused) return error;
  if (error instanceof MultipartError) return new UploadRefused(badUserInput(error.message));
  return errorCodeOf(error) ? new UploadRefused(error as GraphQLError) : error;
}

/** Where one file goes in `operations`: the object (or array, by index) that holds the null, and its key. */
interface MapTarget {
  holder: Record<string, unknown>;
  key: string;
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

/**
 * Reads the spec's `map` (`{ "0": ["variables.input.source"] }`) into where each
 * file goes. A path may only walk the JSON that `operations` holds: every
 * segment an own property of an object (or an index of an array), never a
 * prototype key, ending at the null the client left for the file. Anything
 * else is refused naming the path, so that a path like
 * `variables.__proto__.x` cannot reach Object.prototype.
 */
function readUploadMap(operations: Operations, map: unknown): Map<string, MapTarget[]> {
  if (!isPlainObject(map)) throw new UploadRefused(badUserInput("The multipart field `map` must be a JSON object of file part names to paths"));
  const targets = new Map<string, MapTarget[]>();
  for (const [fieldName, paths] of Object.entries(map)) {
    if (!Array.isArray(paths) || paths.length === 0 || !paths.every((path) => typeof path === "string")) {
      throw new UploadRefused(badUserInput(`\`map\` entry \`${fieldName}\` must be a non-empty list of paths`, { field: fieldName }));
    }
    targets.set(fieldName, paths.map((path) => locateMapTarget(operations, path)));
  }
  return targets;
}

function locateMapTarget(operations: Operations, path: string): MapTarget {
  const refuse = (why: string) => new UploadRefused(badUserInput(`Upload map path ${JSON.stringify(path)} ${why}`, { path }));
  const segments = path.split(".");
  if (segments[0] !== "variables" || segments.length < 2) throw refuse("must point inside variables");
  const valueAt = (holder: unknown, key: string): unknown => {
    if (PROTOTYPE_KEYS.has(key)) throw refuse(`walks into ${JSON.stringify(key)}, which is not a variable`);
    const walkable = isPlainObject(holder) || (Array.isArray(holder) && /^(0|[1-9]\d*)$/.test(key));
    if (!walkable || !Object.hasOwn(holder as object, key)) throw refuse(`names nothing in the operation's variables (at ${JSON.stringify(key)})`);
    return (holder as Record<string, unknown>)[key];
  };
  let holder: unknown = operations;
  for (const key of segments.slice(0, -1)) holder = valueAt(holder, key);
  const key = segments.at(-1)!;
  if (valueAt(holder, key) !== null) throw refuse("must point at a null, where the file goes");
  return { holder: holder as MapTarget["holder"], key };
}
