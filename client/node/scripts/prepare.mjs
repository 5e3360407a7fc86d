// `prepare`: npm runs it for `npm pack` and `npm ci`/`npm install` here, and for this folder when another
// project installs it with `npm install PATH/TO/client/node`.
//
// That last case needs care (npm 11): a folder outside the installing project is symlinked, and npm does not
// install the folder's own dependencies, so `zeromq` would not resolve from lib/. This script installs the
// runtime dependencies into the folder when they are missing (`--omit=dev --ignore-scripts`: no devDependencies,
// and no recursion into this script). The compiled code is committed in lib/ (scripts/test-node-package.sh
// checks it matches src/), so no TypeScript is needed there; where TypeScript is installed (a developer
// checkout, `npm pack`), lib/ is rebuilt from src/.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const here = (path) => new URL(`../${path}`, import.meta.url);
const root = here("").pathname;

if (!existsSync(here("node_modules/zeromq/package.json")) || !existsSync(here("node_modules/@msgpack/msgpack/package.json"))) {
  console.log("tts-broker-client: installing its runtime dependencies (zeromq, @msgpack/msgpack) into", root);
  const npmCli = process.env["npm_execpath"];
  const args = ["install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--no-save", "--loglevel=error"];
  if (npmCli && npmCli.endsWith(".js")) execFileSync(process.execPath, [npmCli, ...args], { cwd: root, stdio: "inherit" });
  else execFileSync("npm", args, { cwd: root, stdio: "inherit", shell: process.platform === "win32" });
}
if (existsSync(here("node_modules/typescript/bin/tsc"))) {
  execFileSync(process.execPath, [here("scripts/build-lib.mjs").pathname], { stdio: "inherit" });
} else if (existsSync(here("lib/esm/index.js")) && existsSync(here("lib/cjs/index.js"))) {
  console.log("tts-broker-client: TypeScript is not installed here; using the build committed in lib/");
} else {
  console.error("tts-broker-client: lib/ is missing and TypeScript is not installed: run `npm install` in client/node");
  process.exit(1);
}
