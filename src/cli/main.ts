// The `vgg` command line: one file per command under src/cli/.
import { Command, CommanderError } from "commander";
import { benchCommand } from "./bench.js";
import { convertCommand } from "./convert.js";
import { dashboardCommand } from "./dashboard.js";
import { evalCommand } from "./eval.js";
import { exportCommand } from "./export.js";
import { infoCommand } from "./info.js";
import { predictCommand } from "./predict.js";
import { serveCommand } from "./serve.js";
import { summaryCommand } from "./summary.js";
import { trainCommand } from "./train.js";

export function program(): Command {
  const p = new Command("vgg")
    .description("VGG-family convolutional networks in TypeScript: summarise, train, evaluate and predict")
    .version("0.1.0")
    .showHelpAfterError();
  p.addCommand(summaryCommand());
  p.addCommand(trainCommand());
  p.addCommand(evalCommand());
  p.addCommand(predictCommand());
  p.addCommand(infoCommand());
  p.addCommand(benchCommand());
  p.addCommand(dashboardCommand());
  p.addCommand(serveCommand());
  p.addCommand(exportCommand());
  p.addCommand(convertCommand());
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().exitOverride().parseAsync(argv);
    // Commands report failure (below a --target-acc, a stopped run) through process.exitCode.
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    console.error(`vgg: ${(e as Error).message}`);
    return 1;
  }
}
