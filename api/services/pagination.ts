/**
 * Relay connections over keyset pagination, for every connection of the API: a
 * cursor is the sort key of a row, base64url-encoded, so pages stay stable
 * while rows are added. Both directions of the Relay cursor spec: `first`
 * (after `after`) reads from the start of the range, `last` (before `before`)
 * from its end; `after` and `before` together bound the range. Each connection
 * describes its order once (a Keyset); the bounds, the read order and the
 * page are built here, for Prisma queries and raw SQL alike.
 */
import { badUserInput } from "../../shared/errors.ts";
import { Prisma } from "../generated/prisma/client.ts";

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

type KeyPart = "string" | "number" | "date";
type KeyValue = string | number | Date;

/** How a connection is sorted: its key's fields in order, every one ascending or every one descending. */
export interface Keyset<Row> {
  /** Prisma field names (also the column names in raw SQL). */
  fields: readonly string[];
  parts: readonly KeyPart[];
  order: "asc" | "desc";
  keyOf(row: Row): KeyValue[];
}

export interface PageArgs {
  first?: number | null;
  after?: string | null;
  last?: number | null;
  before?: string | null;
}

export interface Page {
  size: number;
  /** `last`: the range is read from its end, backwards, and the page reversed into the connection's order. */
  fromEnd: boolean;
  after?: KeyValue[];
  before?: KeyValue[];
}

/** The page a connection's arguments ask for; out-of-range sizes and foreign cursors are refused. */
export function readPage(args: PageArgs, keyset: Pick<Keyset<unknown>, "parts">): Page {
  if (args.first != null && args.last != null) throw badUserInput("Pass `first` or `last`, not both");
  return {
    size: pageSize(args.first, "first") ?? pageSize(args.last, "last") ?? DEFAULT_PAGE_SIZE,
    fromEnd: args.last != null,
    after: decodeCursor(args.after, keyset.parts, "after"),
    before: decodeCursor(args.before, keyset.parts, "before"),
  };
}

function pageSize(value: number | null | undefined, name: "first" | "last"): number | undefined {
  if (value === null || value === undefined) return undefined;
  if (!Number.isInteger(value) || value < 0 || value > MAX_PAGE_SIZE) {
    throw badUserInput(`\`${name}\` must be an integer from 0 to ${MAX_PAGE_SIZE}, not ${value}`, { limit: MAX_PAGE_SIZE });
  }
  return value;
}

function encodeCursor(key: readonly KeyValue[]): string {
  return Buffer.from(JSON.stringify(key.map((value) => (value instanceof Date ? value.toISOString() : value)))).toString("base64url");
}

function decodeCursor(cursor: string | null | undefined, parts: readonly KeyPart[], name: "after" | "before"): KeyValue[] | undefined {
  if (cursor === null || cursor === undefined || cursor === "") return undefined;
  const foreign = () => badUserInput(`\`${name}\` is not a cursor this API issued`);
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw foreign();
  }
  if (!Array.isArray(key) || key.length !== parts.length) throw foreign();
  return key.map((value: unknown, index) => {
    if (parts[index] === "date") {
      const date = typeof value === "string" ? new Date(value) : undefined;
      if (!date || Number.isNaN(date.getTime())) throw foreign();
      return date;
    }
    if (typeof value !== parts[index]) throw foreign();
    return value as KeyValue;
  });
}

/** The order rows are read in: the connection's, or its reverse for `last`. */
function readOrder(page: Page, keyset: Keyset<never>): "asc" | "desc" {
  if (!page.fromEnd) return keyset.order;
  return keyset.order === "asc" ? "desc" : "asc";
}

/** For each cursor given, whether rows beyond it compare greater or less than its key. */
function bounds(page: Page, keyset: Keyset<never>): { key: KeyValue[]; above: boolean }[] {
  const ascending = keyset.order === "asc";
  return [
    ...(page.after ? [{ key: page.after, above: ascending }] : []),
    ...(page.before ? [{ key: page.before, above: !ascending }] : []),
  ];
}

/** What a Prisma findMany needs: the range's bounds (to AND into `where`), the read order, and one row more than the page. */
export function prismaPage<Where, OrderBy>(page: Page, keyset: Keyset<never>): { where: Where[]; orderBy: OrderBy[]; take: number } {
  const where = bounds(page, keyset).map(({ key, above }) => ({
    // (a, b) > (x, y)  ⇔  a > x OR (a = x AND b > y)
    OR: keyset.fields.map((field, index) => ({
      ...Object.fromEntries(keyset.fields.slice(0, index).map((equalField, equalIndex) => [equalField, key[equalIndex]])),
      [field]: { [above ? "gt" : "lt"]: key[index] },
    })),
  }));
  const order = readOrder(page, keyset);
  return { where: where as Where[], orderBy: keyset.fields.map((field) => ({ [field]: order })) as OrderBy[], take: page.size + 1 };
}

/**
 * What a raw SQL query needs, for rows under `alias`: the range's bounds as
 * row comparisons (to AND into WHERE), the ORDER BY list in read order, and
 * one row more than the page. `values` renders a key as SQL values of the
 * columns' types.
 */
export function sqlPage(
  page: Page,
  keyset: Keyset<never>,
  alias: string,
  values: (key: KeyValue[]) => Prisma.Sql[],
): { conditions: Prisma.Sql[]; orderBy: Prisma.Sql; take: number } {
  const columns = keyset.fields.map((field) => `${alias}."${field}"`);
  const conditions = bounds(page, keyset).map(
    ({ key, above }) => Prisma.sql`(${Prisma.raw(columns.join(", "))}) ${Prisma.raw(above ? ">" : "<")} (${Prisma.join(values(key))})`,
  );
  const direction = readOrder(page, keyset) === "asc" ? "ASC" : "DESC";
  return { conditions, orderBy: Prisma.raw(columns.map((column) => `${column} ${direction}`).join(", ")), take: page.size + 1 };
}

export interface Connection<Node> {
  edges: { cursor: string; node: Node }[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
}

/**
 * Builds a connection from up to `size + 1` rows fetched in read order (the
 * extra row says there is more in the reading direction). Across a cursor the
 * spec lets a server answer what it knows cheaply: there are rows beyond a
 * cursor this API issued.
 */
export function toConnection<Node>(rows: Node[], page: Page, keyset: Keyset<Node>): Connection<Node> {
  const more = rows.length > page.size;
  const nodes = rows.slice(0, page.size);
  if (page.fromEnd) nodes.reverse();
  const edges = nodes.map((node) => ({ cursor: encodeCursor(keyset.keyOf(node)), node }));
  return {
    edges,
    pageInfo: {
      hasNextPage: page.fromEnd ? Boolean(page.before) : more,
      hasPreviousPage: page.fromEnd ? more : Boolean(page.after),
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges.at(-1)?.cursor ?? null,
    },
  };
}
