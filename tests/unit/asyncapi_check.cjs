'use strict';
// Validates an AsyncAPI document with the official parser (@asyncapi/parser) and prints its diagnostics
// as one JSON array: [{severity, code, message, path}], severity 0 = error, 1 = warning, 2 = info, 3 = hint.
// Usage: node asyncapi_check.cjs DOCUMENT (with NODE_PATH naming the node_modules holding the parser).
const fs = require('node:fs');
const { Parser } = require('@asyncapi/parser');

async function main() {
  const path = process.argv[2];
  const { diagnostics } = await new Parser().parse(fs.readFileSync(path, 'utf8'), { source: path });
  const out = diagnostics.map((d) => ({
    severity: d.severity,
    code: String(d.code),
    message: d.message,
    path: (d.path || []).join('.'),
  }));
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
