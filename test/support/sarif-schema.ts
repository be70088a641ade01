/** A validator for the official SARIF 2.1.0 JSON schema shipped in test/fixtures (see test/unit/sarif.test.ts for its source). */
import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import * as ajvFormats from "ajv-formats";

export const SARIF_SCHEMA_PATH = new URL("../fixtures/sarif-schema-2.1.0.json", import.meta.url);

type FormatsPlugin = (ajv: Ajv) => Ajv;
const addFormats = ((ajvFormats as unknown as { default?: FormatsPlugin }).default ?? ajvFormats) as unknown as FormatsPlugin;

export function sarifValidator(): { validate: ValidateFunction; schemaText: string } {
  const schemaText = readFileSync(SARIF_SCHEMA_PATH, "utf8");
  // Ajv's default class is draft-07, the schema's own dialect; strict mode stays on.
  const ajv = new Ajv({ allErrors: true });
  addFormats(ajv);
  return { validate: ajv.compile(JSON.parse(schemaText)), schemaText };
}
