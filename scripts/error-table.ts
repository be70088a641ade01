// Prints the README's error table from src/errors.ts (`npx tsx scripts/error-table.ts`).
import { clientVisibleErrorCodes } from "../src/errors.ts";

console.log("| Code | HTTP | Meaning |\n|---|---|---|");
for (const { code, statuses, meaning } of clientVisibleErrorCodes()) {
  console.log(`| \`${code}\` | ${statuses.join(", ")} | ${meaning} |`);
}
