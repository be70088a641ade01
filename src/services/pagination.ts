/**
 * Relay connections over keyset pagination: a cursor is the sort key of the
 * last row seen, base64url-encoded, so pages stay stable while rows are added.
 */
import { badUserInput } from "../errors.ts";

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export function pageSize(first: number | null | undefined): number {
  if (first === null || first === undefined) return DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(first) || first < 0) throw badUserInput("`first` must be a non-negative integer");
  return Math.min(first, MAX_PAGE_SIZE);
}

export function encodeCursor(key: readonly (string | number)[]): string {
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

export function decodeCursor(cursor: string | null | undefined, shape: readonly ("string" | "number")[]): (string | number)[] | undefined {
  if (cursor === null || cursor === undefined || cursor === "") return undefined;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw badUserInput("`after` is not a cursor this API issued");
  }
  if (!Array.isArray(key) || key.length !== shape.length || key.some((value, index) => typeof value !== shape[index])) {
    throw badUserInput("`after` is not a cursor this API issued");
  }
  return key as (string | number)[];
}

export interface Connection<Node> {
  edges: { cursor: string; node: Node }[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
}

/** Builds a connection from up to `size + 1` rows fetched in order (the extra row says there is a next page). */
export function toConnection<Node>(rows: Node[], size: number, keyOf: (node: Node) => (string | number)[], hasPrevious = false): Connection<Node> {
  const page = rows.slice(0, size);
  const edges = page.map((node) => ({ cursor: encodeCursor(keyOf(node)), node }));
  return {
    edges,
    pageInfo: {
      hasNextPage: rows.length > size,
      hasPreviousPage: hasPrevious,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges.at(-1)?.cursor ?? null,
    },
  };
}
