// lib/cjs holds the CommonJS build: a package.json there makes Node read its .js files as CommonJS (the
// package itself is "type": "module").
import { writeFileSync } from "node:fs";

writeFileSync(new URL("../lib/cjs/package.json", import.meta.url), '{\n  "type": "commonjs"\n}\n');
