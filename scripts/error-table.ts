// Prints the README's error table from shared/errors.ts (`npx tsx scripts/error-table.ts`).
import { clientVisibleErrorCodes } from "../shared/errors.ts";

console.log("| Code | HTTP | Meaning |\n|---|---|---|");
for (const { code, statuses, meaning } of clientVisibleErrorCodes()) {
  console.log(`| \`${code}\` | ${statuses.join(", ")} | ${meaning} |`);
}
