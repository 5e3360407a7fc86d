// The shipped build: lib/esm (ES modules + .d.ts) and lib/cjs (CommonJS), from src/ only.
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";

const root = new URL("..", import.meta.url).pathname;
const tscBin = new URL("../node_modules/typescript/bin/tsc", import.meta.url).pathname;
rmSync(new URL("../lib", import.meta.url), { recursive: true, force: true });
for (const config of ["tsconfig.lib.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tscBin, "-p", config], { cwd: root, stdio: "inherit" });
}
await import("./mark-cjs.mjs");
