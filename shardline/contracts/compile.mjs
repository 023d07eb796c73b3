#!/usr/bin/env node
// Compile shardline's contracts (sol/*.sol) with the pinned npm `solc` into artifacts/<Name>.json.
//
//   node shardline/contracts/compile.mjs           write the artifacts
//   node shardline/contracts/compile.mjs --check   compile in memory; exit 1 naming every artifact
//                                                  that differs from the one on disk
//
// The output is reproducible: optimizer on (200 runs), evmVersion cancun, no metadata hash in
// the bytecode, stable key order, 2-space JSON with a trailing newline.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const solDir = join(here, "sol");
const artifactsDir = join(here, "artifacts");
const require = createRequire(import.meta.url);

function loadSolc() {
  try {
    return require("solc");
  } catch (err) {
    console.error(
      `cannot load the npm package 'solc' (${err.code || err.message}): ` +
        "run `npm ci` in the repository root (or `make bootstrap`)",
    );
    process.exit(2);
  }
}

const sha256 = (text) => createHash("sha256").update(text, "utf8").digest("hex");

function compile(solc) {
  const files = readdirSync(solDir)
    .filter((f) => f.endsWith(".sol"))
    .sort();
  if (files.length === 0) {
    console.error(`no .sol files in ${solDir}`);
    process.exit(2);
  }
  const sources = {};
  for (const f of files) sources[f] = { content: readFileSync(join(solDir, f), "utf8") };

  const input = {
    language: "Solidity",
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      metadata: { bytecodeHash: "none" },
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };
  const output = JSON.parse(
    solc.compile(JSON.stringify(input), {
      import: (path) => ({ error: `import ${path} not found: keep every source in ${solDir}` }),
    }),
  );
  const problems = output.errors || [];
  const errors = problems.filter((e) => e.severity === "error");
  for (const w of problems.filter((e) => e.severity !== "error")) {
    console.error(w.formattedMessage || w.message);
  }
  if (errors.length > 0) {
    for (const e of errors) console.error(e.formattedMessage || e.message);
    console.error(`compilation failed with ${errors.length} error(s)`);
    process.exit(1);
  }

  const compiler = `solc ${solc.version()}`;
  const artifacts = new Map();
  for (const file of Object.keys(output.contracts || {}).sort()) {
    for (const [name, c] of Object.entries(output.contracts[file]).sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0,
    )) {
      const bytecode = c.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts cannot be deployed
      if (artifacts.has(name)) {
        console.error(`two contracts are named ${name}: contract names must be unique`);
        process.exit(1);
      }
      const artifact = {
        contractName: name,
        abi: c.abi,
        bytecode: `0x${bytecode}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        compiler,
        sourceSha256: sha256(sources[file].content),
      };
      artifacts.set(`${name}.json`, `${JSON.stringify(artifact, null, 2)}\n`);
    }
  }
  return artifacts;
}

const check = process.argv.includes("--check");
const unknown = process.argv.slice(2).filter((a) => a !== "--check");
if (unknown.length > 0) {
  console.error(`unknown argument(s): ${unknown.join(" ")}; usage: compile.mjs [--check]`);
  process.exit(2);
}

const artifacts = compile(loadSolc());

if (check) {
  const differing = [];
  for (const [file, text] of artifacts) {
    const path = join(artifactsDir, file);
    if (!existsSync(path)) differing.push(`${file} (missing)`);
    else if (readFileSync(path, "utf8") !== text) differing.push(`${file} (differs)`);
  }
  const onDisk = existsSync(artifactsDir)
    ? readdirSync(artifactsDir).filter((f) => f.endsWith(".json"))
    : [];
  for (const f of onDisk.sort()) {
    if (!artifacts.has(f)) differing.push(`${f} (stale: no contract of that name)`);
  }
  if (differing.length > 0) {
    console.error("contract artifacts are out of date; run `make compile`:");
    for (const d of differing) console.error(`  ${d}`);
    process.exit(1);
  }
  console.log(`${artifacts.size} contract artifacts are up to date`);
} else {
  mkdirSync(artifactsDir, { recursive: true });
  for (const [file, text] of artifacts) writeFileSync(join(artifactsDir, file), text);
  console.log(`wrote ${artifacts.size} artifacts to ${artifactsDir}: ${[...artifacts.keys()].join(", ")}`);
}
