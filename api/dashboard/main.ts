/**
 * The dashboard's entry point: log-in, the header, and two routes: `#/` (the
 * operator's panels and the scans, or a user's own scans and the submit form)
 * and `#/scans/ID` (one scan). Everything after log-in is live over graphql-ws.
 */
import "./styles.css";
import { Api } from "./api.ts";
import { h, replaceChildren, startTicker } from "./dom.ts";
import { VIEWER } from "./operations.ts";
import { createOpsPanels, type OpsPanels } from "./ops.ts";
import { createScanPage } from "./scan-page.ts";
import { createScansPanel, createSubmitPanel, describe, type ScansPanel } from "./scans.ts";
import { currentToken, forgetToken, saveToken } from "./session.ts";
import type { Viewer } from "./types.ts";

const root = document.getElementById("app")!;

function showLogin(problem?: string) {
  const input = h("textarea", { rows: 4, placeholder: "eyJhbGciOi…", "aria-label": "Bearer token", required: true, spellcheck: "false" });
  replaceChildren(
    root,
    h(
      "main",
      { class: "login" },
      h("h1", {}, "Vega"),
      h("p", {}, "Paste a bearer token to open the dashboard."),
      problem ? h("p", { class: "error-box", role: "alert" }, problem) : null,
      h(
        "form",
        {
          onsubmit: (event: Event) => {
            event.preventDefault();
            saveToken(input.value);
            void start();
          },
        },
        input,
        h("button", { type: "submit", class: "primary" }, "Open the dashboard"),
      ),
      h(
        "p",
        { class: "muted" },
        "On the machine running Vega: ",
        h("code", {}, "npx vega dashboard --sub alice"),
        " prints a link that logs an operator in; ",
        h("code", {}, "npx vega token --sub alice"),
        " prints a user's token.",
      ),
    ),
  );
  input.focus();
}

async function start() {
  const token = currentToken();
  if (!token) return showLogin();
  const live = h("span", { class: "live-state", title: "WebSocket" }, "connecting…");
  const flash = h("div", { class: "flash", role: "status", "aria-live": "polite" });
  const report = (message: string, error = false) => {
    replaceChildren(flash, h("span", { class: error ? "flash-error" : "flash-ok" }, message));
    window.setTimeout(() => flash.textContent === message && replaceChildren(flash), 8000);
  };
  let views: { reload(): Promise<void> }[] = [];
  const api = new Api(token, {
    onConnected: (again) => {
      live.className = "live-state live";
      live.textContent = "live";
      // Events sent while the socket was down are lost: read everything anew.
      if (again) for (const view of views) void view.reload();
    },
    onDisconnected: () => {
      live.className = "live-state down";
      live.textContent = "reconnecting…";
    },
    onRefused: (reason) => {
      api.close();
      forgetToken();
      showLogin(`The token was refused (${reason}). Paste a new one.`);
    },
  });

  let viewer: Viewer;
  try {
    viewer = (await api.request<{ viewer: Viewer }>(VIEWER)).viewer;
  } catch (error) {
    api.close();
    forgetToken();
    return showLogin(`The token was refused: ${describe(error)}`);
  }
  startTicker(() => api.now());

  const content = h("main", { class: "content" });
  replaceChildren(
    root,
    h(
      "header",
      { class: "topbar" },
      h("a", { href: "#/", class: "brand" }, "Vega"),
      h("span", { class: "who" }, viewer.id, viewer.isOperator ? h("span", { class: "tag operator-tag" }, "operator") : null),
      live,
      h("a", { href: "/graphql", target: "_blank", rel: "noopener" }, "GraphiQL"),
      h(
        "button",
        {
          class: "link",
          onclick: () => {
            api.close();
            forgetToken();
            location.hash = "";
            showLogin();
          },
        },
        "Log out",
      ),
    ),
    flash,
    content,
  );

  let disposeView = () => {};
  const route = () => {
    disposeView();
    replaceChildren(flash);
    const scanMatch = /^#\/scans\/([\w-]+)$/.exec(location.hash);
    if (scanMatch) {
      const page = createScanPage(api, scanMatch[1]!, report);
      views = [page];
      replaceChildren(content, page.element);
      disposeView = () => page.dispose();
      return;
    }
    let ops: OpsPanels | undefined;
    const scans: ScansPanel = createScansPanel(api, viewer, report, () => ops?.scansChanged());
    if (viewer.isOperator) ops = createOpsPanels(api, report);
    const submit = viewer.isOperator ? null : createSubmitPanel(api, viewer, report, (scan) => scans.upsert(scan));
    views = [scans, ...(ops ? [ops] : [])];
    replaceChildren(content, ops ? ops.element : null, submit, scans.element);
    for (const view of views) void view.reload();
    disposeView = () => {
      scans.dispose();
      ops?.dispose();
    };
  };
  window.onhashchange = route;
  route();
}

void start();
