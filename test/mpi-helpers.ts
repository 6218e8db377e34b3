// Shared by the MPI tests: whether mpirun and the MPI addon are here (else the tests skip, naming what is
// missing, except in CI, which installs Open MPI), and running `vgg` under mpirun with a time limit.
import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mpiAddonPaths } from "../src/distributed/mpi.js";
import { readSafetensors } from "../src/io/safetensors.js";

const haveMpirun = spawnSync("mpirun", ["--version"], { encoding: "utf8", timeout: 30_000 }).status === 0;
const haveAddon = mpiAddonPaths.some((p) => existsSync(p));

/** false when the MPI tests can run; else why not (CI runs them regardless, so a missing piece fails). */
export const mpiSkip: string | false = process.env.CI
  ? false
  : !haveMpirun
    ? "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev, then npx node-gyp rebuild)"
    : !haveAddon
      ? "the MPI addon is not built (install libopenmpi-dev, then npx node-gyp rebuild)"
      : false;

/** mpirun's flags for one machine: as root (CI runs as root), more processes than cores. */
export const MPIRUN_FLAGS = ["--allow-run-as-root", "--oversubscribe"];

export function mpirunArgs(np: number, vggArgs: readonly string[]): string[] {
  return [...MPIRUN_FLAGS, "-np", String(np), process.execPath, "bin/vgg", ...vggArgs];
}

/** `mpirun -np N vgg ARGS`, killed after `timeout` ms (a hang fails the test instead of stalling it). */
export function mpirunVgg(
  np: number,
  args: readonly string[],
  { timeout = 300_000, env = {} as NodeJS.ProcessEnv } = {},
): SpawnSyncReturns<string> {
  return spawnSync("mpirun", mpirunArgs(np, args), {
    encoding: "utf8",
    timeout,
    env: { ...process.env, VGG_QUIET: "1", ...env },
  });
}

/** The pid of the process of a given rank among mpirun's children (mpirun forks them on one machine). */
export function rankPid(mpirunPid: number, rank: number): number | null {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== mpirunPid) continue;
      const env = readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (env.includes(`OMPI_COMM_WORLD_RANK=${rank}`)) return Number(entry);
    } catch {
      // the process ended while we looked
    }
  }
  return null;
}

/** The largest |a - b| over each tensor relative to the largest |a| of that tensor, worst over the file. */
export function worstRelativeDifference(fileA: string, fileB: string): { worst: number; name: string } {
  const a = readSafetensors(fileA).tensors;
  const b = readSafetensors(fileB).tensors;
  let worst = 0;
  let name = "";
  for (const [key, t] of a) {
    const u = b.get(key);
    if (!u || u.data.length !== t.data.length) return { worst: Number.POSITIVE_INFINITY, name: key };
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < t.data.length; i++) {
      diff = Math.max(diff, Math.abs(t.data[i] - u.data[i]));
      scale = Math.max(scale, Math.abs(t.data[i]));
    }
    const rel = scale > 0 ? diff / scale : diff;
    if (rel > worst || !Number.isFinite(rel)) {
      worst = rel;
      name = key;
    }
  }
  return { worst, name };
}
