/**
 * GraphQL multipart requests (the upload spec), streamed: yoga would buffer
 * every file in memory before a resolver runs, which cannot serve 2 GB
 * archives. Here busboy reads `operations` and `map` (which the spec sends
 * first), the file part streams to a temporary file in the artifact store while
 * it is hashed and counted, and the operation then runs with a placeholder in
 * place of the File; the resolver finds the stored file in the context.
 *
 * Checks come before any work, in this order: CSRF preflight header,
 * authentication, the active-scan quota (from the token alone, before the body
 * is read), the declared size, workspace membership (from `operations`), then
 * the size while streaming. Every refusal removes what was written.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import busboy from "busboy";
import type { GraphQLError } from "graphql";
import { authenticate, type Deps } from "../context.ts";
import { badUserInput, errorCodeOf, sourceTooLarge, unauthenticated, vegaError } from "../errors.ts";
import { checkActiveScanQuota } from "../services/quota.ts";
import type { StoredUpload } from "../services/uploads.ts";
import { resolveMemberWorkspace } from "../services/users.ts";
import type { VegaYoga } from "./graphql.ts";
import { sendError, sendWebResponse } from "./respond.ts";

/** Room for the `operations` and `map` fields and part headers around the file itself. */
const FORM_OVERHEAD_BYTES = 1024 * 1024;

/** Fewer, larger writes to the temporary file: per-write overhead shows at 1 GiB. */
const STREAM_BUFFER_BYTES = 1024 * 1024;

/** Apollo Server's CSRF rule: a multipart post must carry a header a browser cannot send cross-site without preflight. */
const PREFLIGHT_HEADERS = ["apollo-require-preflight", "x-apollo-operation-name", "graphql-preflight"];

class UploadRefused extends Error {
  constructor(readonly error: GraphQLError) {
    super(error.message);
  }
}

interface ParsedForm {
  operations: { query?: unknown; variables?: Record<string, unknown>; operationName?: unknown };
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
    // The client may still be sending a large body: do not keep the connection for it.
    res.setHeader("connection", "close");
    sendError(res, error);
    req.resume();
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

  const quotaRefusal = await checkActiveScanQuota(deps.prisma, deps.config, viewer.user.id).catch((error: unknown) => error);
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
    form = await parseMultipart(deps, req, async (operations) => {
      const workspaceId = findWorkspaceId(operations.variables);
      if (workspaceId) await resolveMemberWorkspace(deps.prisma, viewer.user!, workspaceId);
    });
  } catch (error) {
    if (error instanceof UploadRefused) return refuse(error.error);
    throw error;
  }

  try {
    const response = await yoga.fetch(
      new Request(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: req.headers.accept ?? "application/json" },
        body: JSON.stringify(form.operations),
      }),
      { vega: { requestId, uploads: form.uploads, viewer } },
    );
    await sendWebResponse(res, response);
  } finally {
    // Whatever the operation did not take into the store (a refusal, an error) is removed.
    await Promise.all([...form.uploads.values()].map((upload) => rm(upload.tempPath, { force: true })));
  }
}

/** The workspace a submitScan names, if any, so membership is checked before the file is read. */
function findWorkspaceId(variables: Record<string, unknown> | undefined): string | undefined {
  const input = variables?.input;
  if (input && typeof input === "object" && typeof (input as Record<string, unknown>).workspaceId === "string") {
    return (input as Record<string, string>).workspaceId;
  }
  return undefined;
}

function parseMultipart(
  deps: Deps,
  req: IncomingMessage,
  beforeFiles: (operations: ParsedForm["operations"]) => Promise<void>,
): Promise<ParsedForm> {
  const { config, artifacts } = deps;
  return new Promise<ParsedForm>((resolve, reject) => {
    let operations: ParsedForm["operations"] | undefined;
    let map: Record<string, string[]> | undefined;
    let ready: Promise<void> | undefined;
    const uploads = new Map<string, StoredUpload>();
    const writes: Promise<void>[] = [];
    const tempPaths: string[] = [];
    let failed = false;

    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      req.unpipe(parser);
      req.resume();
      Promise.allSettled(writes)
        .then(() => Promise.all(tempPaths.map((file) => rm(file, { force: true }))))
        .finally(() => reject(error));
    };

    const parser = busboy({
      headers: req.headers,
      limits: { fileSize: config.maxSourceBytes, fieldSize: FORM_OVERHEAD_BYTES, files: 1, fields: 2 },
    });

    parser.on("field", (name, value, info) => {
      if (info.valueTruncated) return fail(new UploadRefused(badUserInput(`The multipart field \`${name}\` is too large`)));
      try {
        if (name === "operations") operations = JSON.parse(value);
        else if (name === "map") map = JSON.parse(value);
      } catch {
        return fail(new UploadRefused(badUserInput(`The multipart field \`${name}\` is not valid JSON`)));
      }
      if (operations && map && !ready) {
        ready = beforeFiles(operations);
        // Awaited later (by the file part or at close); marked handled now so an early refusal is not an unhandled rejection.
        ready.catch(() => {});
      }
    });

    parser.on("file", (fieldName, stream, info) => {
      if (failed) return stream.resume();
      const targets = map?.[fieldName];
      if (!operations || !map || !targets || !ready) {
        stream.resume();
        return fail(
          new UploadRefused(badUserInput("Multipart requests must send `operations` and `map` before the files, per the GraphQL multipart request spec")),
        );
      }
      const tempPath = artifacts.tempPath("upload");
      tempPaths.push(tempPath);
      const hash = createHash("sha256");
      let sizeBytes = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          sizeBytes += chunk.length;
          callback(null, chunk);
        },
      });
      stream.on("limit", () => {
        // busboy stops at VEGA_MAX_SOURCE_BYTES: the upload is refused and its partial file removed.
        stream.destroy(new UploadRefused(sourceTooLarge({ limit: config.maxSourceBytes })));
      });
      const placeholder = `vega-upload:${fieldName}`;
      writes.push(
        ready
          .then(() => pipeline(stream, meter, createWriteStream(tempPath, { flags: "wx", highWaterMark: STREAM_BUFFER_BYTES })))
          .then(() => {
            uploads.set(placeholder, {
              placeholder,
              tempPath,
              fileName: info.filename ?? "source.zip",
              mimeType: info.mimeType,
              sizeBytes,
              sha256: hash.digest("hex"),
            });
            for (const target of targets) setPath(operations!, target, placeholder);
          })
          .catch((error: unknown) => {
            stream.resume();
            fail(error instanceof UploadRefused || errorCodeOf(error) ? wrapRefusal(error) : error);
          }),
      );
    });

    parser.on("error", (error: unknown) => fail(new UploadRefused(badUserInput(`Malformed multipart body: ${(error as Error).message}`))));
    req.on("aborted", () => fail(new UploadRefused(badUserInput("The client aborted the upload"))));
    parser.on("close", () => {
      Promise.all([ready, ...writes]).then(
        () => {
          if (failed) return;
          if (!operations || !map) return fail(new UploadRefused(badUserInput("Multipart requests need `operations` and `map` fields")));
          resolve({ operations, uploads });
        },
        (error: unknown) => fail(wrapRefusal(error)),
      );
    });
    req.pipe(parser);
  });
}

function wrapRefusal(error: unknown): unknown {
  if (error instanceof UploadRefused) return error;
  return errorCodeOf(error) ? new UploadRefused(error as GraphQLError) : error;
}

/** Sets `variables.input.source` (a map target) to the placeholder, refusing paths outside `variables`. */
function setPath(operations: ParsedForm["operations"], target: string, value: string) {
  const segments = target.split(".");
  if (segments[0] !== "variables" || segments.length < 2) {
    throw new UploadRefused(badUserInput(`Upload map target ${JSON.stringify(target)} must point inside variables`));
  }
  let node: Record<string, unknown> = operations as Record<string, unknown>;
  for (const segment of segments.slice(0, -1)) {
    const next = node[segment];
    if (next === null || typeof next !== "object") {
      throw new UploadRefused(badUserInput(`Upload map target ${JSON.stringify(target)} names no variable`));
    }
    node = next as Record<string, unknown>;
  }
  node[segments.at(-1)!] = value;
}
