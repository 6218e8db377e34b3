// Loads the optional MPI addon (build/Release/vgg_mpi.node, native/mpi/), built by node-gyp only where
// Open MPI's headers and library were found. A plain install has no MPI symbol anywhere; asking for
// --distributed there explains how to get Open MPI instead of failing obscurely.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Paths tried, in order, for the compiled MPI addon ($VGG_MPI_ADDON replaces them with one path). */
export const mpiAddonPaths = process.env.VGG_MPI_ADDON
  ? [process.env.VGG_MPI_ADDON]
  : [join(root, "build", "Release", "vgg_mpi.node"), join(root, "build", "Debug", "vgg_mpi.node")];

export interface WorldInfo {
  rank: number;
  size: number;
  /** MPI_Get_processor_name of this rank. */
  host: string;
  /** MPI_Get_library_version. */
  library: string;
}

export type ReduceOp = "sum" | "min" | "max";

/** The addon's exports (native/mpi/mpi_binding.cc). Collectives resolve with their seconds on the wire. */
export interface MpiAddon {
  /** MPI_Init_thread on the addon's communication thread; every MPI call is made there, in call order. */
  init(options: { timeoutSeconds: number; pollMicroseconds?: number }): WorldInfo;
  /** In-place all-reduce of one or more buffers of one type (several are packed into one message). */
  allreduce(buffers: readonly (Float32Array | Float64Array)[], op: ReduceOp): Promise<number>;
  /** In-place broadcast from `root` of each buffer in turn. */
  broadcast(buffers: readonly (Float32Array | Float64Array)[], root: number): Promise<number>;
  /** Every rank's string (up to 1023 bytes), by rank. */
  allgather(text: string): Promise<string[]>;
  barrier(): Promise<number>;
  /** MPI_Abort(code): ends every rank of the job. */
  abort(code: number): void;
  finalize(): void;
  /** The sentence this rank prints if mpirun stops it with SIGTERM (e.g. where the last checkpoint is). */
  setExitNote(text: string): void;
}

/** Open MPI's launcher sets these in every process it starts. */
export function launchedByMpirun(): { size: number; rank: number } | null {
  const size = Number(process.env.OMPI_COMM_WORLD_SIZE ?? process.env.PMI_SIZE ?? Number.NaN);
  const rank = Number(process.env.OMPI_COMM_WORLD_RANK ?? process.env.PMI_RANK ?? Number.NaN);
  return Number.isInteger(size) && Number.isInteger(rank) ? { size, rank } : null;
}

export const OPEN_MPI_HINT = [
  "possible solutions:",
  "  - install Open MPI: apt-get install openmpi-bin libopenmpi-dev (Debian/Ubuntu), dnf install openmpi-devel (Fedora; then `module load mpi`), brew install open-mpi (macOS)",
  "  - then rebuild the addons in vgg-ts's folder: npx node-gyp rebuild (or npm rebuild vgg-ts), which builds build/Release/vgg_mpi.node when `mpicc --showme` works",
  "  - launch with: mpirun -np N vgg train --distributed ...",
].join("\n");

let cached: MpiAddon | Error | undefined;

/** The addon, or an Error saying why it is unavailable and how to install Open MPI. */
export function loadMpiAddon(): MpiAddon | Error {
  if (cached) return cached;
  const path = mpiAddonPaths.find((p) => existsSync(p));
  if (!path) {
    cached = new Error(
      `--distributed needs Open MPI, and vgg-ts's MPI addon is not built (no ${mpiAddonPaths[0]}): npm install builds it only where Open MPI's mpi.h and libmpi are found.\n${OPEN_MPI_HINT}`,
    );
    return cached;
  }
  try {
    cached = createRequire(import.meta.url)(path) as MpiAddon;
  } catch (e) {
    cached = new Error(
      `--distributed: the MPI addon ${path} could not be loaded (${(e as Error).message}); Open MPI's library may be missing or of another version.\n${OPEN_MPI_HINT}`,
    );
  }
  return cached;
}

/** The addon, or throws loadMpiAddon's explanation. */
export function requireMpiAddon(): MpiAddon {
  const addon = loadMpiAddon();
  if (addon instanceof Error) throw addon;
  return addon;
}
