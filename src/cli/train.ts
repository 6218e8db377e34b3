// `vgg train`: d2l's experiment (VGG-11/4 on Fashion-MNIST at 224, SGD lr 0.05, 10 epochs, batch 128)
// as the defaults. The run itself is the library's `fit` (src/train/fit.ts); this file is its flags, the
// progress bar and log lines, Ctrl-C, the live dashboard and the exit code.
import { SingleBar } from "cli-progress";
import { type Command, Command as CommandClass, Option } from "commander";
import {
  addDistributedOptions,
  type DistributedFlags,
  failDistributed,
  finishDistributed,
  startDistributed,
} from "../distributed/cli.js";
import type { DataParallel } from "../distributed/data-parallel.js";
import type { EpochSummary, TrainCallback } from "../train/events.js";
import { FIT_DEFAULTS, type FitOptions, fit } from "../train/fit.js";
import { NonFiniteError } from "../train/trainer.js";
import { classList } from "./classes.js";
import { addDashboardOptions, type DashboardFlags, startTrainDashboard } from "./dashboard.js";
import { addModelOptions, addRuntimeOptions, positiveInt, probability } from "./model-options.js";

const D = FIT_DEFAULTS;

export type TrainFlags = FitOptions & DashboardFlags & DistributedFlags;

function nonNegative(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!(n >= 0) || !Number.isFinite(n))
      throw new Error(`Expected ${name} to be a number >= 0 but received "${v}"`);
    return n;
  };
}

export function addTrainOptions(cmd: Command): Command {
  return cmd
    .option("--epochs <n>", "epochs", positiveInt("--epochs"), D.epochs)
    .option("--batch-size <n>", "batch size", positiveInt("--batch-size"), D.batchSize)
    .option("--lr <x>", "learning rate", nonNegative("--lr"), D.lr)
    .option("--momentum <x>", "SGD momentum", nonNegative("--momentum"), D.momentum)
    .option("--weight-decay <x>", "L2 weight decay", nonNegative("--weight-decay"), D.weightDecay)
    .option("--nesterov", "Nesterov momentum (needs --momentum > 0)")
    .addOption(
      new Option("--schedule <name>", "learning-rate schedule")
        .choices(["constant", "step", "cosine"])
        .default(D.schedule),
    )
    .option("--warmup-epochs <n>", "linear warm-up epochs", nonNegative("--warmup-epochs"), D.warmupEpochs)
    .option(
      "--step-size <n>",
      "epochs between decays for --schedule step",
      positiveInt("--step-size"),
      D.stepSize,
    )
    .option("--gamma <x>", "decay factor for --schedule step", nonNegative("--gamma"), D.gamma)
    .addOption(
      new Option("--init <scheme>", "weight init: xavier (d2l), default (PyTorch's), kaiming")
        .choices(["xavier", "default", "kaiming"])
        .default(D.init),
    )
    .option("--seed <n>", "seed for init, shuffling, augmentation and dropout", nonNegative("--seed"), D.seed)
    .option(
      "--data-dir <dir>",
      "Fashion-MNIST folder (else $FASHION_MNIST_DIR, ~/.cache/vgg-ts, /usr/share/datasets)",
    )
    .option("--no-download", "never download the dataset")
    .option("--out <dir>", "output folder for checkpoints, metrics and curves", D.out)
    .option(
      "--init-weights <file>",
      "start from a safetensors checkpoint (a different head is re-initialised)",
    )
    .option("--no-shuffle", "keep the training set in file order")
    .option("--augment", "random crop (padding 2) and horizontal flip")
    .option("--limit-train <n>", "use the first n training examples", positiveInt("--limit-train"))
    .option("--limit-test <n>", "use the first n test examples", positiveInt("--limit-test"))
    .option(
      "--classes <list>",
      "train and test on these classes only, e.g. 0,1,2 (relabelled 0..k-1)",
      classList,
    )
    .option(
      "--target-acc <a>",
      "exit non-zero if the final test accuracy is below a",
      probability("--target-acc"),
    )
    .option("--resume <dir>", "continue the run saved in dir");
}

export function trainCommand(): Command {
  return addDistributedOptions(
    addDashboardOptions(
      addTrainOptions(addRuntimeOptions(addModelOptions(new CommandClass("train"), { ratio: 4 }))),
    ),
  )
    .description("train a VGG on Fashion-MNIST; the defaults are the d2l chapter's recipe")
    .action(async (flags: TrainFlags, cmd: Command) => {
      // Only what was given on the command line: fit fills the same defaults, and a resumed run keeps
      // its saved options except the ones the user set again.
      const given = Object.fromEntries(
        Object.entries(flags).filter(([k]) => cmd.getOptionValueSource(k) !== "default"),
      ) as Partial<TrainFlags>;
      const { dashboard: wantDashboard, host, port, distributed, mpiTimeout, ...options } = given;
      // The dashboard's sample predictions run the model synchronously on the host.
      if (wantDashboard && (options.backend ?? process.env.VGG_BACKEND) === "webgpu")
        throw new Error("--dashboard runs on the CPU backends; it does not work with --backend webgpu yet");
      const dp = startDistributed({ distributed, mpiTimeout });
      const dashboard =
        wantDashboard && (dp?.isRoot ?? true) ? await startTrainDashboard({ host, port }) : undefined;
      let status = "failed";
      try {
        process.exitCode = await runTrain(options, dashboard ? [dashboard] : [], dp);
        status = process.exitCode === 0 ? "finished" : `stopped (exit code ${process.exitCode})`;
        finishDistributed(dp);
      } catch (e) {
        await failDistributed(dp, e as Error);
        throw e;
      } finally {
        await dashboard?.close(status);
      }
    });
}

const fmt = (x: number) => x.toFixed(3);

/** The progress bar on stderr and a line per epoch on stdout. */
function consoleProgress(): TrainCallback {
  let bar: SingleBar | null = null;
  let epochs = 0;
  const stop = () => {
    bar?.stop();
    bar = null;
  };
  return {
    trainBegin: (run) => {
      epochs = run.epochs;
    },
    epochBegin: (epoch, steps) => {
      bar = new SingleBar({
        format: `epoch ${epoch + 1}/${epochs} |{bar}| {value}/{total} loss {loss} acc {acc} {ips} img/s ETA {eta_formatted}`,
        hideCursor: true,
        clearOnComplete: true,
        stream: process.stderr,
      });
      bar.start(steps, 0, { loss: "-", acc: "-", ips: "-" });
    },
    batchEnd: (r) => {
      bar?.update(r.batch + 1, {
        loss: fmt(r.meanLoss),
        acc: fmt(r.accuracy),
        ips: r.examplesPerSec.toFixed(1),
      });
      if (r.batch + 1 === r.batches) stop();
    },
    epochStopped: stop,
    epochEnd: (e: EpochSummary) => {
      stop();
      console.log(
        `epoch ${e.epoch}/${e.epochs}: loss ${fmt(e.trainLoss)}, train acc ${fmt(e.trainAcc)}, test acc ${fmt(e.testAcc)}, ` +
          `${e.examplesPerSec.toFixed(1)} examples/sec (${e.seconds.toFixed(1)} s)`,
      );
    },
  };
}

/**
 * Runs `fit` as the command line does and returns the exit code: 0 done, 2 below --target-acc,
 * 3 diverged (the last good checkpoint kept), 130 interrupted by Ctrl-C (a second Ctrl-C quits at once).
 */
export async function runTrain(
  options: Partial<FitOptions>,
  callbacks: TrainCallback[] = [],
  distributed?: DataParallel,
): Promise<number> {
  // Under mpirun every rank returns the same code; rank 0 alone prints the summary.
  const say = distributed && !distributed.isRoot ? { log: () => {}, error: () => {} } : console;
  const abort = new AbortController();
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(130);
    abort.abort();
    process.stderr.write("\nInterrupted: finishing the current batch (Ctrl-C again to quit at once)...\n");
  };
  process.on("SIGINT", onSigint);
  const out = () => options.resume ?? options.out ?? D.out;
  let result: Awaited<ReturnType<typeof fit>>;
  try {
    result = await fit(options, {
      callbacks: [consoleProgress(), ...callbacks],
      signal: abort.signal,
      distributed,
    });
  } catch (e) {
    if (e instanceof NonFiniteError) {
      say.error(`Stopped: ${e.message}. The last good checkpoint is kept in ${out()}.`);
      return 3;
    }
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
  }
  const o = result.options;
  if (result.status === "interrupted") {
    say.error(
      `Interrupted. The last complete epoch is saved in ${o.out}; continue with: vgg train --resume ${o.out}`,
    );
    return 130;
  }
  const last = result.last;
  if (!last) {
    const done = result.history.filter((h) => h.type === "epoch").at(-1);
    const epochs = result.history.filter((h) => h.type === "epoch").length;
    say.log(
      `Nothing to do: the run in ${o.out} already completed ${epochs} epochs (${JSON.stringify(done)})`,
    );
    return 0;
  }
  say.log(`loss ${fmt(last.trainLoss)}, train acc ${fmt(last.trainAcc)}, test acc ${fmt(last.testAcc)}`);
  say.log(`${result.examplesPerSec.toFixed(1)} examples/sec on ${result.device}`);
  if (o.targetAcc !== undefined && last.testAcc < o.targetAcc) {
    say.error(`Test accuracy ${fmt(last.testAcc)} is below the target ${o.targetAcc}`);
    return 2;
  }
  return 0;
}
