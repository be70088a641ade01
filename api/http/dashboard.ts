/**
 * The dashboard at `/`: one HTML page, its script and its stylesheet, every
 * byte served from here. The page's TypeScript (api/dashboard/) is bundled by
 * esbuild in memory on the first request for the page (0.2 to 0.3 s measured here), so
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
import { build as esbuild } from "esbuild";
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
  /** The asset, once the bundle is built (on the first request for any of them). */
  get(name: string): Promise<Asset | undefined>;
}

/**
 * The page's assets, built on the first request for one of them and kept: a replica that never
 * serves a browser (most of a fleet, every test server) never starts esbuild.
 */
export function dashboardAssets(log: Logger): DashboardAssets {
  let built: Promise<Map<string, Asset>> | undefined;
  return {
    async get(name) {
      built ??= build(log).catch((error: unknown) => {
        // Logged once per attempt; the next request tries again, and the API keeps serving meanwhile.
        built = undefined;
        log.error({ err: error }, "the dashboard could not be built");
        throw error;
      });
      return (await built).get(name);
    },
  };
}

async function build(log: Logger): Promise<Map<string, Asset>> {
  const startedAt = performance.now();
  const [bundle, html, favicon] = await Promise.all([
    esbuild({
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
  const assets = new Map<string, Asset>();
  for (const file of bundle.outputFiles) {
    const name = path.basename(file.path);
    assets.set(name, { body: Buffer.from(file.contents), contentType: name.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8" });
  }
  assets.set("index.html", { body: html, contentType: "text/html; charset=utf-8" });
  assets.set("favicon.svg", { body: favicon, contentType: "image/svg+xml" });
  log.debug({ buildMs: Math.round(performance.now() - startedAt) }, "dashboard bundle built");
  return assets;
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
