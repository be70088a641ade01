/**
 * The dashboard at `/`: one HTML page, its script and its stylesheet, every
 * byte served from here. The page's TypeScript (api/dashboard/) is bundled by
 * esbuild in memory when the server starts (0.2 to 0.3 s measured here), so
 * `npm install` is the only set-up and no build output is ever committed.
 *
 * The Content-Security-Policy is what keeps the promise "nothing from
 * elsewhere": a script, style, font or connection to another origin is refused
 * by the browser itself, not just absent from the page.
 */
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { Logger } from "../../shared/logger.ts";

const SOURCE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "dashboard");

/** GET paths of the dashboard; anything else is not the dashboard's. */
const PAGE_PATHS = new Set(["/", "/index.html"]);
const ASSET_ROUTE = /^\/dashboard\/(main\.js|main\.css|favicon\.svg)$/;

// 'self' covers same-origin ws:/wss: connections in CSP Level 3 (Chromium, Firefox, Safari ≥ 15.4).
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob:",
  "connect-src 'self'",
  "font-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

interface Asset {
  body: Buffer;
  contentType: string;
}

export interface DashboardAssets {
  /** Resolves once the bundle is built; rejects if it cannot be. */
  ready: Promise<void>;
  /** Milliseconds the build took (for the start log). */
  buildMs?: number;
  get(name: string): Promise<Asset | undefined>;
}

/** Starts building the page's bundle now; requests wait for it. */
export function buildDashboard(log: Logger): DashboardAssets {
  const assets = new Map<string, Asset>();
  const result: DashboardAssets = {
    ready: Promise.resolve(),
    async get(name) {
      await result.ready;
      return assets.get(name);
    },
  };
  const startedAt = performance.now();
  result.ready = (async () => {
    const [bundle, html, favicon] = await Promise.all([
      build({
        entryPoints: [path.join(SOURCE_DIR, "main.ts")],
        bundle: true,
        write: false,
        outdir: "out",
        format: "esm",
        minify: true,
        legalComments: "none",
        // What teams run: the last two years of Chromium, Firefox and Safari.
        target: ["chrome110", "firefox115", "safari16"],
        logLevel: "silent",
      }),
      readFile(path.join(SOURCE_DIR, "index.html")),
      readFile(path.join(SOURCE_DIR, "favicon.svg")),
    ]);
    for (const file of bundle.outputFiles) {
      const name = path.basename(file.path);
      assets.set(name, { body: Buffer.from(file.contents), contentType: name.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8" });
    }
    assets.set("index.html", { body: html, contentType: "text/html; charset=utf-8" });
    assets.set("favicon.svg", { body: favicon, contentType: "image/svg+xml" });
    result.buildMs = Math.round(performance.now() - startedAt);
    log.debug({ buildMs: result.buildMs }, "dashboard bundle built");
  })();
  // A failed build shows on the first request (500, logged); the server keeps serving the API.
  result.ready.catch((error: unknown) => log.error({ err: error }, "the dashboard could not be built"));
  return result;
}

/** The dashboard's route, if `pathname` is one of its paths. */
export function dashboardAssetOf(pathname: string): string | undefined {
  if (PAGE_PATHS.has(pathname)) return "index.html";
  return ASSET_ROUTE.exec(pathname)?.[1];
}

export async function serveDashboard(assets: DashboardAssets, req: IncomingMessage, res: ServerResponse, name: string) {
  const asset = await assets.get(name);
  if (!asset) {
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("Not found");
    return;
  }
  res.writeHead(200, {
    "content-type": asset.contentType,
    "content-length": String(asset.body.length),
    // The bundle is rebuilt at each start: browsers revalidate rather than keep an old page.
    "cache-control": "no-cache",
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    // The token sits in the page's fragment a moment before it is moved: no Referer may carry the address.
    "referrer-policy": "no-referrer",
  });
  res.end(req.method === "HEAD" ? undefined : asset.body);
}
