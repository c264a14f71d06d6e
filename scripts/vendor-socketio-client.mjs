// Copies the stock socket.io-client ESM bundle (installed from the npm registry by
// `npm ci`) into the Python package's static folder, where the demo page loads it from
// (/static/vendor/socket.io.esm.min.js).  Run by npm's postinstall hook; the copy is
// gitignored and never fetched from a CDN.
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(root, "package.json"));
const pkgJson = require.resolve("socket.io-client/package.json");
const pkg = JSON.parse(readFileSync(pkgJson, "utf8"));
const dist = join(dirname(pkgJson), "dist");
const target = join(root, "chat_server", "web", "vendor");
mkdirSync(target, { recursive: true });
for (const name of ["socket.io.esm.min.js", "socket.io.esm.min.js.map"]) {
  copyFileSync(join(dist, name), join(target, name));
}
copyFileSync(join(dirname(pkgJson), "LICENSE"), join(target, "socket.io-client.LICENSE"));
console.log(`socket.io-client ${pkg.version} copied to chat_server/web/vendor/`);
