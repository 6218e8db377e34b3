// The command line's side of data-parallel training: the --distributed flags, starting MPI, and ending it
// so that every rank stops cleanly (MPI_Finalize when the ranks are in step, MPI_Abort when not).
import type { Command } from "commander";
import { DataParallel } from "./data-parallel.js";
import { launchedByMpirun } from "./mpi.js";

export interface DistributedFlags {
  distributed?: boolean;
  mpiTimeout?: number;
}

function positiveSeconds(v: string): number {
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n))
    throw new Error(`Expected --mpi-timeout to be a number of seconds > 0 but received "${v}"`);
  return n;
}

export function addDistributedOptions(cmd: Command): Command {
  return cmd
    .option(
      "--distributed",
      "data-parallel over MPI: launch as mpirun -np N vgg ... --distributed (needs Open MPI)",
    )
    .option(
      "--mpi-timeout <s>",
      "with --distributed: seconds a rank waits for the others in one collective before ending the job",
      positiveSeconds,
    );
}

/** Starts MPI for --distributed; refuses a multi-process mpirun launch without it. */
export function startDistributed(flags: DistributedFlags): DataParallel | undefined {
  if (!flags.distributed) {
    const launch = launchedByMpirun();
    if (launch && launch.size > 1)
      throw new Error(
        `launched by mpirun as ${launch.size} processes but without --distributed: each would train its own copy into the same folder; add --distributed`,
      );
    if (flags.mpiTimeout !== undefined) throw new Error("--mpi-timeout needs --distributed");
    return undefined;
  }
  return DataParallel.start({ timeoutSeconds: flags.mpiTimeout });
}

/** After a normal end (including a refused start, which every rank saw): MPI_Finalize. */
export function finishDistributed(dp: DataParallel | undefined): void {
  dp?.finalize();
}

/**
 * After an error: when the ranks are still in step (every rank refused to start) MPI is finalised and
 * the error goes on to be printed; otherwise this rank prints it and ends the whole job (MPI_Abort), so
 * that no rank waits for one that is gone.
 */
export async function failDistributed(dp: DataParallel | undefined, error: Error): Promise<void> {
  if (!dp) return;
  if (dp.state === "refused") {
    dp.finalize();
    return;
  }
  const message = error.message.startsWith(dp.describe())
    ? error.message
    : `${dp.describe()}: ${error.message}`;
  process.stderr.write(`vgg: ${message}\nvgg: ending the MPI job (MPI_Abort)\n`);
  dp.abort(1);
  // MPI_Abort runs on the communication thread and ends this process; it never resolves.
  await new Promise((resolve) => setTimeout(resolve, 30_000));
  process.exit(1);
}
