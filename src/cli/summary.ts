// `vgg summary`: the d2l shape walk, then a per-layer table of parameters and multiply-accumulates.
import { Command } from "commander";
import { summarize } from "../models/summary.js";
import { formatShape } from "../tensor.js";
import { addModelOptions, buildModel, type ModelFlags, vggOptions } from "./model-options.js";

export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

export function formatMacs(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)} K`;
  return String(n);
}

export function summaryCommand(): Command {
  return addModelOptions(new Command("summary"))
    .description(
      "walk a 1 x C x H x W input through the network and print each layer's output shape, parameters and MACs",
    )
    .option("--json", "print the summary as JSON")
    .action((flags: ModelFlags & { json?: boolean }) => {
      const options = vggOptions(flags);
      const model = buildModel(flags);
      const size = options.inputSize!;
      const s = summarize(model, [1, options.inChannels!, size, size]);
      if (flags.json) {
        console.log(JSON.stringify({ config: model.config, ...s }, null, 2));
        return;
      }
      for (const w of s.walk) console.log(`${w.layer} output shape:\t${formatShape(w.outputShape)}`);
      console.log();
      const header = ["Layer", "Type", "Output shape", "Params", "MACs"];
      const table = s.rows.map((r) => [
        r.name,
        r.layer,
        formatShape(r.outputShape),
        formatCount(r.params),
        formatMacs(r.macs),
      ]);
      const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
      const line = (cells: string[]) =>
        cells.map((c, i) => (i >= 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ");
      console.log(line(header));
      console.log(widths.map((w) => "-".repeat(w)).join("  "));
      for (const row of table) console.log(line(row));
      console.log();
      console.log(`Total params: ${formatCount(s.totalParams)}`);
      console.log(`Trainable params: ${formatCount(s.trainableParams)}`);
      console.log(`Total MACs: ${formatMacs(s.totalMacs)} (${formatCount(s.totalMacs)}) per image`);
    });
}
