import { lexicographicSortSchema, printSchema } from "graphql";
import { builder } from "./builder.ts";
import "./viewer.ts";
import "./scans.ts";
import "./ops.ts";
import "./workers.ts";
import "./sessions.ts";
import "./cleanup.ts";
import "./diagnostics.ts";
import "./audit.ts";
import "./execution.ts";
import "./recovery.ts";
import "./claims.ts";
import "./ops-scans.ts";

export const schema = builder.toSchema();

/** The SDL committed as schema.graphql (sorted, so that diffs show only real changes). */
export const printedSchema = () => `${printSchema(lexicographicSortSchema(schema))}\n`;
