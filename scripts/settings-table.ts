// Prints the README's settings table from shared/config.ts (`npx tsx scripts/settings-table.ts`).
import { settings } from "../shared/config.ts";

console.log("| Variable | Default | What it sets |\n|---|---|---|");
for (const spec of Object.values(settings)) {
  console.log(`| \`${spec.env}\` | ${spec.default === "" ? "(unset)" : `\`${spec.default}\``} | ${spec.description} |`);
}
