// `prepare`: npm runs it after `npm install`/`npm ci` in this folder, before `npm pack`/`npm publish`, and for
// this folder when another project installs it with `npm install PATH/TO/client/node`. It makes lib/ (which
// git does not hold) from src/.
//
// That last case needs care (npm 11): a folder outside the installing project is symlinked, and npm installs
// none of the folder's own dependencies, so neither `zeromq` (which lib/ loads) nor TypeScript (which builds
// lib/) would be there. This script installs them into the folder when they are missing (`--ignore-scripts`:
// no recursion into this script; zeromq's prebuilt binary needs no install script), then builds.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const here = (path) => new URL(`../${path}`, import.meta.url);
const root = here("").pathname;

if (process.env["npm_command"] === "pack" || process.env["npm_command"] === "publish") {
  process.exit(0); // `prepack` builds lib/ for these
}
const needed = ["zeromq", "@msgpack/msgpack", "typescript"];
if (needed.some((name) => !existsSync(here(`node_modules/${name}/package.json`)))) {
  console.log("tts-broker-client: installing its dependencies (zeromq, @msgpack/msgpack, typescript) into", root);
  const npmCli = process.env["npm_execpath"];
  const args = ["install", "--include=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--no-save",
    "--loglevel=error"];
  if (npmCli && npmCli.endsWith(".js")) execFileSync(process.execPath, [npmCli, ...args], { cwd: root, stdio: "inherit" });
  else execFileSync("npm", args, { cwd: root, stdio: "inherit", shell: process.platform === "win32" });
}
execFileSync(process.execPath, [here("scripts/build-lib.mjs").pathname], { stdio: "inherit" });
