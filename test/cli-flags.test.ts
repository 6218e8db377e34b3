// Every command that builds a model takes the same model and input flags, and every command that runs one
// the same kernel flags: one definition each (src/cli/model-options.ts). Walks each command's options as
// commander holds them and its --help as a user sees it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import type { Command, Option } from "commander";
import { program } from "../src/cli/main.js";

const MODEL_FLAGS = [
  "--arch",
  "--ratio",
  "--in-channels",
  "--input-size",
  "--num-classes",
  "--batch-norm",
  "--layout",
  "--dropout",
  "--classifier-width",
  "--resize",
];
const RUNTIME_FLAGS = ["--threads", "--backend"];
const MODEL_COMMANDS = ["summary", "train", "eval", "predict", "serve", "bench", "export"];
const RUNNING_COMMANDS = ["train", "eval", "predict", "serve", "bench"];

function command(name: string): Command {
  const c = program().commands.find((c) => c.name() === name);
  assert.ok(c, `no command ${name}`);
  return c;
}

/** What a user can see of an option: its syntax, help text, default and choices. */
function describe(o: Option) {
  return { flags: o.flags, description: o.description, default: o.defaultValue, choices: o.argChoices };
}

function optionsOf(c: Command): Map<string, ReturnType<typeof describe>> {
  return new Map(c.options.map((o) => [o.long ?? o.flags, describe(o)]));
}

test("every model-building command has the same model and input flags, defined the same way", () => {
  const ref = optionsOf(command("train"));
  for (const name of MODEL_COMMANDS) {
    const opts = optionsOf(command(name));
    for (const flag of MODEL_FLAGS) {
      assert.ok(opts.has(flag), `vgg ${name} lacks ${flag}`);
      const mine = opts.get(flag)!;
      const theirs = ref.get(flag)!;
      if (flag === "--ratio") {
        // summary walks the chapter's full-width VGG-11 by default; the rest default to d2l's ratio 4.
        assert.equal(mine.flags, theirs.flags);
        assert.match(mine.description, /^divide every channel count by n \(default: [14] for the d2l layout/);
      } else assert.deepEqual(mine, theirs, `vgg ${name} ${flag} differs from vgg train's`);
    }
  }
});

test("every command that runs a model takes --threads and --backend, defined the same way", () => {
  const ref = optionsOf(command("train"));
  for (const name of RUNNING_COMMANDS) {
    const opts = optionsOf(command(name));
    for (const flag of RUNTIME_FLAGS) assert.deepEqual(opts.get(flag), ref.get(flag), `vgg ${name} ${flag}`);
  }
});

test("each command's --help lists its shared flags, and no flag is defined twice", {
  timeout: 60_000,
}, () => {
  for (const name of MODEL_COMMANDS) {
    const longs = command(name).options.map((o) => o.long);
    assert.equal(new Set(longs).size, longs.length, `vgg ${name} defines a flag twice: ${longs.join(" ")}`);
    const r = spawnSync(process.execPath, ["bin/vgg", name, "--help"], {
      encoding: "utf8",
      env: { ...process.env, VGG_QUIET: "1" },
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const expected = [...MODEL_FLAGS, ...(RUNNING_COMMANDS.includes(name) ? RUNTIME_FLAGS : [])];
    for (const flag of expected)
      assert.match(r.stdout, new RegExp(`^\\s+${flag} `, "m"), `vgg ${name} --help: ${flag}`);
  }
});
