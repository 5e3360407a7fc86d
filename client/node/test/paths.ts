/** Where things are, relative to the compiled test files (dist/test). */

import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO_DIR = path.resolve(PACKAGE_DIR, "..", "..");
export const VECTORS_DIR = path.join(REPO_DIR, "protocol", "vectors");
