#!/usr/bin/env node
// Runs the compiled test tiers named on the command line (dist/tests/<tier>), one file at
// a time: integration tests boot real guests, and on a 2-core machine running them side
// by side only slows each one down.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

const dirs = process.argv.slice(2).map((tier) => `dist/tests/${tier}`).filter((dir) => existsSync(dir));
if (dirs.length === 0) process.exit(0);
const result = spawnSync(process.execPath, ["--test", "--test-concurrency=1", ...dirs], { stdio: "inherit" });
process.exit(result.status ?? 1);
