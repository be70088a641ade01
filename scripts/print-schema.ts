// Writes schema.graphql from the Pothos schema, without starting a server.
// `npm run schema:print`; test/schema-drift.test.ts fails when it is out of date.
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { printedSchema } from "../api/schema/index.ts";

const target = fileURLToPath(new URL("../schema.graphql", import.meta.url));
await writeFile(target, printedSchema());
console.log(`wrote ${target}`);
