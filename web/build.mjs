// Builds the web app into dist/: the bundle (esbuild; automerge's WebAssembly inlined as base64,
// so there is one file to cache), the page, the stylesheet and the service worker.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/app.js"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  outfile: "dist/app.js",
  logLevel: "warning",
});
for (const f of ["index.html", "app.css", "sw.js"]) copyFileSync(`src/${f}`, `dist/${f}`);
