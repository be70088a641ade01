/** A few lines of DOM building, so that the panels read as the markup they make. */
type Child = Node | string | number | null | undefined | false;
type Props = Record<string, unknown>;

/** `h("td", { class: "age" }, "12 s")`: attributes, `on*` listeners, and DOM properties given as non-strings. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value as EventListener);
    else if (name === "class") element.className = String(value);
    else if (typeof value !== "string" && value !== true && name in element) (element as unknown as Props)[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === "number" ? String(child) : child);
  }
  return element;
}

/** Same, in the SVG namespace (the throughput chart). */
export function svg(tag: string, attributes: Record<string, string | number> = {}, ...children: (SVGElement | string)[]): SVGElement {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

export function replaceChildren(parent: Element, ...children: (Child | Child[])[]) {
  parent.replaceChildren(...(children.flat().filter((child) => child !== null && child !== undefined && child !== false) as (Node | string)[]).map((c) => (typeof c === "number" ? String(c) : c)));
}

/** "4 s", "3 min 20 s", "2 h 5 min", "3 d 4 h": an age as a person reads it. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export const formatTime = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : "—");

/**
 * An age that ticks: the element keeps the instant it counts from (on the
 * server's clock) and the page's ticker rewrites every such element each second.
 */
export function age(sinceMs: number, extraClass = ""): HTMLSpanElement {
  return h("span", { class: `age ${extraClass}`.trim(), "data-since": String(sinceMs) }, formatAge((clock() - sinceMs) / 1000));
}

let clock = () => Date.now();

export function startTicker(now: () => number) {
  clock = now;
  const tick = () => {
    for (const element of document.querySelectorAll<HTMLElement>("[data-since]")) {
      element.textContent = formatAge((now() - Number(element.dataset.since)) / 1000);
    }
  };
  tick();
  return window.setInterval(tick, 1000);
}

/** window.confirm, as every destructive action asks. */
export const confirmed = (question: string) => window.confirm(question);
