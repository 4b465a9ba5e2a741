// Validates an AsyncAPI document with the official parser (@asyncapi/parser), resolving its
// relative $refs (the event JSON Schemas) from the file's directory. Any diagnostic of error
// or warning severity fails; hints and information are printed.
import { Parser, fromFile } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs <asyncapi document>");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const severity = ["error", "warning", "information", "hint"];
let failed = false;
for (const d of diagnostics) {
  const level = severity[d.severity] ?? String(d.severity);
  console.error(`${level}: ${d.message} at ${d.path.join(".") || "(root)"} [${d.code}]`);
  failed ||= d.severity <= 1;
}
if (!document || failed) process.exit(1);
console.log(
  `${path}: AsyncAPI ${document.version()} valid — ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.messages().length} messages`,
);
