// Compiles RillRegistry.sol with the pinned npm `solc` into the committed artifact
// RillRegistry.json ({ contractName, compiler, abi, bytecode, deployedBytecode }).
//
//   node protocol/contracts/build.mjs           rewrite the artifact
//   node protocol/contracts/build.mjs --check   exit 1 if the artifact is stale
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, "RillRegistry.sol"), "utf8");

const input = {
  language: "Solidity",
  sources: { "RillRegistry.sol": { content: source } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const contract = output.contracts["RillRegistry.sol"].RillRegistry;
const artifact = {
  contractName: "RillRegistry",
  compiler: `solc ${solc.version()}`,
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
  deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";
const path = join(here, "RillRegistry.json");

if (process.argv.includes("--check")) {
  let committed = "";
  try { committed = readFileSync(path, "utf8"); } catch {}
  if (committed !== text) {
    console.error("protocol/contracts/RillRegistry.json is stale: run `npm run build:contracts` and commit it");
    process.exit(1);
  }
  console.log("artifact up to date");
} else {
  writeFileSync(path, text);
  console.log(`wrote ${path}`);
}
