// The `vgg` command line: one file per command under src/cli/.
import { Command, CommanderError } from "commander";
import { summaryCommand } from "./summary.js";

export function program(): Command {
  const p = new Command("vgg")
    .description("VGG-family convolutional networks in TypeScript: summarise, train, evaluate and predict")
    .version("0.1.0")
    .showHelpAfterError();
  p.addCommand(summaryCommand());
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().exitOverride().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    console.error(`vgg: ${(e as Error).message}`);
    return 1;
  }
}
