// Loading a weights file for eval/predict/export: the file's metadata describes the model, or the
// model flags do (a file saved by PyTorch).
import { parseArch } from "../models/vgg.js";
import { type LoadedModel, loadModel } from "../train/checkpoint.js";
import { type ModelFlags, vggOptions } from "./model-options.js";

export function loadWeightsForCli(path: string, flags: ModelFlags): LoadedModel {
  return loadModel(path, { convArch: parseArch(flags.arch), options: vggOptions(flags) });
}
