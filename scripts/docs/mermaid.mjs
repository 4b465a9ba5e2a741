// Parses each Mermaid diagram named on the command line (files holding one diagram each) with
// Mermaid's own parser — the one the code host renders with — and exits non-zero naming each
// diagram that does not parse. Mermaid expects a browser: jsdom provides the window it touches.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

let failed = 0;
for (const path of process.argv.slice(2)) {
  const [source, ...diagram] = readFileSync(path, "utf8").split("\n");
  try {
    const parsed = await mermaid.parse(diagram.join("\n"));
    console.log(`${source}: ${parsed.diagramType}`);
  } catch (error) {
    failed += 1;
    console.error(`${source}: does not parse: ${String(error.message ?? error)}`);
  }
}
process.exit(failed ? 1 : 0);
