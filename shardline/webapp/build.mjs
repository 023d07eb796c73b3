// Builds the responders' web app into static/ (or the folder given as the first argument):
// app.js (bundled with jsQR, minified), app.css, guides.json (the public dangerous-goods table
// and ERG guides, so a UN number can be read with no signal), the shell files, and sw.js whose
// cache version is the hash of everything it caches. Same sources, same bytes: a test rebuilds
// into a temporary folder and compares with the committed static/.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const data = join(here, "..", "data");
const out = process.argv[2] ?? join(here, "static");
mkdirSync(join(out, "icons"), { recursive: true });

const target = ["chrome100", "firefox100", "safari15"];
await esbuild.build({
  entryPoints: [join(src, "app.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target,
  legalComments: "eof",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: [join(src, "app.css")],
  bundle: true,
  minify: true,
  target,
  outfile: join(out, "app.css"),
  logLevel: "warning",
});

// A small CSV reader for the quoted fields of dangerous_goods.csv.
function csvRows(text) {
  const lines = text.split(/\r?\n/).filter((l) => l && !l.startsWith("#"));
  const parse = (line) => {
    const cells = [];
    let cell = "";
    let quoted = false;
    for (let i = 0; i < line.length; i++) {
      const ch = line[i];
      if (quoted) {
        if (ch === '"' && line[i + 1] === '"') { cell += '"'; i++; }
        else if (ch === '"') quoted = false;
        else cell += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") { cells.push(cell); cell = ""; }
      else cell += ch;
    }
    cells.push(cell);
    return cells;
  };
  const [head, ...rows] = lines.map(parse);
  return rows.map((r) => Object.fromEntries(head.map((h, i) => [h, r[i] ?? ""])));
}

const ergs = JSON.parse(readFileSync(join(data, "erg_guides.json"), "utf8"));
const guides = {};
for (const g of csvRows(readFileSync(join(data, "dangerous_goods.csv"), "utf8"))) {
  const erg = ergs[g.erg_guide];
  if (!erg) throw new Error(`ERG guide ${g.erg_guide} for ${g.un_number} is missing from erg_guides.json`);
  guides[g.un_number] = {
    un_number: g.un_number,
    proper_shipping_name: g.proper_shipping_name,
    hazard_class: g.hazard_class,
    subsidiary_risks: g.subsidiary_risks ? g.subsidiary_risks.split(";") : [],
    packing_group: g.packing_group,
    erg_guide: g.erg_guide,
    erg_title: erg.title,
    isolate_m: erg.isolate_m,
    do: erg.do,
    never: erg.never,
  };
}
writeFileSync(join(out, "guides.json"), JSON.stringify(guides) + "\n");

for (const f of ["index.html", "manifest.webmanifest"]) copyFileSync(join(src, f), join(out, f));
for (const f of readdirSync(join(src, "icons")).sort()) copyFileSync(join(src, "icons", f), join(out, "icons", f));

// What the service worker caches: the shell, by URL, and the file that answers it.
const shell = {
  "/": "index.html",
  "/manifest.webmanifest": "manifest.webmanifest",
  "/static/app.js": "app.js",
  "/static/app.css": "app.css",
  "/static/guides.json": "guides.json",
  "/static/icons/icon.svg": "icons/icon.svg",
  "/static/icons/icon-192.png": "icons/icon-192.png",
  "/static/icons/icon-512.png": "icons/icon-512.png",
};
const hash = createHash("sha256");
for (const [url, file] of Object.entries(shell)) hash.update(url).update(readFileSync(join(out, file)));
const version = hash.digest("hex").slice(0, 16);
const sw = readFileSync(join(src, "sw.js"), "utf8")
  .replace("__VERSION__", version)
  .replace("__SHELL__", JSON.stringify(Object.keys(shell)));
writeFileSync(join(out, "sw.js"), sw);
console.log(`built the web app into ${out} (shell ${version})`);
