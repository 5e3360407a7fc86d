// The shipped build, from src/ only (never committed: `prepare` and `prepack` make it):
//   lib/esm  ES modules (.js) with their declarations (.d.ts)
//   lib/cjs  CommonJS (.cjs) with declarations of their own (.d.cts), so a require() caller's types describe
//            the CommonJS code it loads rather than the ES modules (what are-the-types-wrong checks).
// tsc emits CommonJS as .js/.d.ts; the files are renamed and their relative specifiers ("./x.js") pointed at
// the renamed files ("./x.cjs"), which a .d.cts resolves to "./x.d.cts".
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const tscBin = new URL("../node_modules/typescript/bin/tsc", import.meta.url).pathname;
rmSync(join(root, "lib"), { recursive: true, force: true });
for (const config of ["tsconfig.lib.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tscBin, "-p", config], { cwd: root, stdio: "inherit" });
}

const relativeJs = /(["'])(\.{1,2}\/[^"'\n]+?)\.js\1/g;
function toCommonJs(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      toCommonJs(path);
      continue;
    }
    const target = entry.name.endsWith(".d.ts") ? path.replace(/\.d\.ts$/, ".d.cts")
      : entry.name.endsWith(".js") ? path.replace(/\.js$/, ".cjs") : null;
    if (target === null) continue;
    writeFileSync(path, readFileSync(path, "utf8").replace(relativeJs, "$1$2.cjs$1"));
    renameSync(path, target);
  }
}
toCommonJs(join(root, "lib", "cjs"));
