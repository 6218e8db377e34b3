// Finds Open MPI for binding.gyp: `node native/mpi/detect.cjs found|include|libs`. Prints "1"/"0" for
// `found`, and the include directories or linker flags (space-separated) otherwise. Tries `mpicc
// --showme` (Open MPI's wrapper), then `pkg-config ompi`; MPI counts as found only when mpi.h exists.
const { execFileSync } = require("node:child_process");
const { existsSync } = require("node:fs");
const { join } = require("node:path");

function run(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

function flags() {
  if (process.env.VGG_MPI === "0") return null; // lets a build skip the MPI addon on purpose
  const compile = run("mpicc", ["--showme:compile"]);
  const link = run("mpicc", ["--showme:link"]);
  if (compile !== null && link !== null) return { compile, link };
  const pc = run("pkg-config", ["--cflags", "ompi"]);
  const pl = run("pkg-config", ["--libs", "ompi"]);
  if (pc !== null && pl !== null) return { compile: pc, link: pl };
  return null;
}

const found = flags();
const includes = found
  ? found.compile
      .split(/\s+/)
      .filter((f) => f.startsWith("-I"))
      .map((f) => f.slice(2))
  : [];
const hasHeader = includes.some((dir) => existsSync(join(dir, "mpi.h"))) || existsSync("/usr/include/mpi.h");
const what = process.argv[2];
if (what === "found") console.log(found && hasHeader ? "1" : "0");
else if (what === "include") console.log(includes.join(" "));
else if (what === "libs") console.log(found ? found.link : "");
else {
  console.error("usage: node native/mpi/detect.cjs found|include|libs");
  process.exit(2);
}
