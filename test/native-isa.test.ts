// Run-time ISA dispatch: the level reported matches the CPU's features, VGG_NATIVE_ISA forces every level
// the CPU has and refuses (naming the missing feature) those it lacks, and the native suites (comparison
// with the reference, fuzz, determinism, threads) pass under each level the CPU has, each in a child
// process since the level is fixed when the addon loads. Levels the CPU lacks are skipped with the reason.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadNativeAddon, type NativeInfo } from "../src/backend/native.js";

const here = dirname(fileURLToPath(import.meta.url));
const vgg = join(here, "..", "..", "bin", "vgg");
const levels = ["portable", "avx2", "avx512", "amx"] as const;
// What each level needs on top of the one below (native/isa.cc).
const needs: Record<(typeof levels)[number], string[]> = {
  portable: [],
  avx2: ["avx2", "fma"],
  avx512: ["avx512f", "avx512bw", "avx512vl", "avx512dq"],
  amx: ["amx-tile", "amx-bf16"],
};

const forced = process.env.VGG_NATIVE_ISA;
const loaded = loadNativeAddon();
if (loaded instanceof Error) throw new Error(`ISA tests need the addon: ${loaded.message}`);
const info: NativeInfo = loaded.info();

/** The features `level` needs that this CPU lacks (empty when it has the level). */
function missing(level: (typeof levels)[number]): string[] {
  const upTo = levels.slice(0, levels.indexOf(level) + 1);
  return upTo.flatMap((l) => needs[l]).filter((f) => !info.cpuFeatures.includes(f));
}

/** Runs `args` with VGG_NATIVE_ISA=level, outside the parent runner's protocol, with a time limit. */
function runAt(level: string, args: string[], extraEnv: Record<string, string> = {}, timeout = 300_000) {
  const { NODE_TEST_CONTEXT: _, VGG_NATIVE_ISA: __, ...env } = process.env;
  return spawnSync(process.execPath, args, {
    env: { ...env, VGG_NATIVE_ISA: level, ...extraEnv },
    encoding: "utf8",
    timeout,
  });
}

test("the level in use is the best the CPU has, and each level's features are present", () => {
  assert.equal(info.isa, forced || info.bestIsa);
  const best = levels.filter((l) => missing(l).length === 0).at(-1);
  assert.equal(info.bestIsa, best, `features ${info.cpuFeatures.join(" ")}`);
  assert.equal(info.cpuHasAvx2Fma, missing("avx2").length === 0);
  for (const family of ["gemm", "sparseGemm", "winogradTransforms", "directConv", "maxPool", "batchNorm"])
    assert.equal(typeof info.kernels[family], "string", `kernel named for ${family}`);
});

for (const level of levels) {
  const lacks = missing(level);
  if (lacks.length > 0) {
    test(`VGG_NATIVE_ISA=${level} is refused on this CPU, naming ${lacks.join(", ")}`, () => {
      const r = runAt(level, [
        "--input-type=module",
        "-e",
        `import { loadNativeAddon } from ${JSON.stringify(join(here, "..", "src", "backend", "native.js"))};
         try { loadNativeAddon(); console.log("loaded"); } catch (e) { console.log("refused: " + e.message); }`,
      ]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stdout,
        new RegExp(`^refused: VGG_NATIVE_ISA=${level} needs ${lacks.join(", ")}, which this CPU lacks`),
      );
      // The command line reports it and exits 1 instead of falling back to the reference backend.
      const cli = runAt(level, [vgg, "info"], {}, 60_000);
      assert.equal(cli.status, 1, cli.stdout + cli.stderr);
      assert.match(cli.stderr, new RegExp(`vgg: VGG_NATIVE_ISA=${level} needs ${lacks[0]}`));
    });
    test(`the native suites at level ${level}`, (t) => {
      t.skip(`this CPU lacks ${lacks.join(", ")}`);
    });
    continue;
  }
  if (forced) continue; // a child run: the parent covers the other levels
  test(`the native suites pass at VGG_NATIVE_ISA=${level}`, (t) => {
    const child = runAt(level, [vgg, "info", "--json"], {}, 60_000);
    assert.equal(child.status, 0, child.stderr);
    const reported = JSON.parse(child.stdout) as { isa: string; kernels: Record<string, string> };
    assert.equal(reported.isa, level);
    t.diagnostic(
      `${level}: ${Object.entries(reported.kernels)
        .map(([f, k]) => `${f} ${k}`)
        .join("; ")}`,
    );
    if (level === info.bestIsa) return; // the default run of each suite covers the best level
    for (const suite of ["native", "native-determinism", "threads", "fuzz-native"]) {
      const r = runAt(level, ["--test-reporter=tap", join(here, `${suite}.test.js`)], {
        VGG_FUZZ_NATIVE_RUNS: "1000",
      });
      assert.equal(r.signal, null, `${suite} at ${level} died of ${r.signal}`);
      assert.equal(
        r.status,
        0,
        `${suite} at ${level} failed:\n${r.stdout.slice(-6000)}\n${r.stderr.slice(-2000)}`,
      );
      assert.match(r.stdout, /# fail 0/);
      const pass = /# pass (\d+)/.exec(r.stdout);
      assert.ok(pass && Number(pass[1]) > 0, `${suite} at ${level} ran no test`);
      t.diagnostic(`${suite} at ${level}: ${pass?.[1]} passed`);
    }
  });
}

test("VGG_NATIVE_ISA must name a level", () => {
  const r = runAt("avx3", [vgg, "info"], {}, 60_000);
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    /Expected VGG_NATIVE_ISA to be "portable", "avx2", "avx512" or "amx" but received "avx3"; hint: unset it/,
  );
});
