/**
 * GraphiQL on GET /graphql for browsers, every byte from Vega:
 * `@graphql-yoga/render-graphiql` inlines GraphiQL's script, styles and
 * editor workers into one page (yoga's own renderer loads them from unpkg,
 * which fails offline and behind strict networks).
 *
 * Two things yoga's GraphiQL does not do, added by a small script before it starts:
 * - the bearer token: the header editor starts with the dashboard's token when
 *   this tab has one (sessionStorage, same origin), otherwise with a template;
 * - subscriptions over graphql-ws: the WebSocket client sends no HTTP headers,
 *   and Vega reads the token from connection_init's payload. The script records
 *   the Authorization header of GraphiQL's last HTTP request (its schema
 *   introspection comes first) and hands it to graphql-ws as connectionParams.
 */
import type { GraphiQLOptions } from "graphql-yoga";
import { renderGraphiQL } from "@graphql-yoga/render-graphiql";

/** The sessionStorage key under which the dashboard keeps its token (api/dashboard/session.ts). */
export const DASHBOARD_TOKEN_KEY = "vega.token";

export const GRAPHIQL_OPTIONS: GraphiQLOptions = {
  title: "Vega GraphiQL",
  subscriptionsProtocol: "WS",
  headers: JSON.stringify({ Authorization: "Bearer <token: npx vega token --sub you>" }, null, 2),
  defaultQuery: "# Set your bearer token in the Headers tab below.\nquery Me {\n  viewer {\n    id\n    isOperator\n    quota { activeScans maxActiveScans }\n  }\n}\n",
};

const bootScript = (tokenKey: string) => `<script>
  (function () {
    var lastAuthorization = null;
    var originalFetch = window.fetch.bind(window);
    window.fetch = function (input, init) {
      var headers = new Headers((init && init.headers) || (input instanceof Request ? input.headers : undefined));
      if (headers.has("authorization")) lastAuthorization = headers.get("authorization");
      return originalFetch(input, init);
    };
    window.vegaGraphiQLOptions = function (options) {
      var token = null;
      try { token = sessionStorage.getItem(${JSON.stringify(tokenKey)}); } catch (e) {}
      if (token) options.headers = JSON.stringify({ Authorization: "Bearer " + token }, null, 2);
      options.connectionParams = function () {
        return lastAuthorization ? { authorization: lastAuthorization } : {};
      };
      return options;
    };
  })();
</script>`;

let rendered: { key: string; html: string } | undefined;

/** yoga's `renderGraphiQL`: the page is 18 MB, rendered once per set of options and reused. */
export function renderVegaGraphiQL(options?: GraphiQLOptions): string {
  const key = JSON.stringify(options ?? {});
  if (rendered?.key === key) return rendered.html;
  const html = renderGraphiQL(options);
  // The options are written into the page as this JSON text, in the call that starts GraphiQL.
  const at = html.lastIndexOf(key);
  if (at < 0) throw new Error("GraphiQL's page changed shape: the options call was not found");
  const withOptions = `${html.slice(0, at)}window.vegaGraphiQLOptions(${key})${html.slice(at + key.length)}`;
  const body = withOptions.indexOf("<body");
  const bodyOpen = withOptions.indexOf(">", body) + 1;
  rendered = { key, html: `${withOptions.slice(0, bodyOpen)}${bootScript(DASHBOARD_TOKEN_KEY)}${withOptions.slice(bodyOpen)}` };
  return rendered.html;
}
