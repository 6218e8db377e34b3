// `vgg serve --weights FILE`: the in-browser classifier. The server only hands out the page, the weights
// and the model's configuration; the browser runs the network itself.
import { statSync } from "node:fs";
import { Command } from "commander";
import { sendFile, sendText } from "../web/http.js";
import { startWebServer } from "../web/server.js";
import { addListenOptions, type ListenFlags } from "./dashboard.js";
import {
  addModelOptions,
  addRuntimeOptions,
  applyRuntimeFlags,
  imageSizeFor,
  type ModelFlags,
  type RuntimeFlags,
} from "./model-options.js";
import { loadWeightsForCli } from "./weights.js";

export const SERVE_PORT = 8080;

export function serveCommand(): Command {
  return addListenOptions(addRuntimeOptions(addModelOptions(new Command("serve"), { ratio: 4 })), SERVE_PORT)
    .description("serve a page that classifies pictures and drawings in the browser with a trained model")
    .requiredOption("--weights <file>", "safetensors weights (vgg-ts, or PyTorch with the model flags)")
    .action(async (flags: ModelFlags & RuntimeFlags & ListenFlags & { weights: string }) => {
      applyRuntimeFlags(flags);
      // Load once here so a bad file fails now, with the CLI's message, rather than in the page.
      const { model } = loadWeightsForCli(flags.weights, flags);
      if (model.config.layout === "torchvision" && model.config.inChannels === 3)
        throw new Error(
          `Expected a Fashion-MNIST model (1 input channel) but ${flags.weights} is an ImageNet-layout model; the page classifies Fashion-MNIST`,
        );
      imageSizeFor(model.config, flags);
      const config = JSON.stringify(model.config);
      const server = await startWebServer({
        host: flags.host,
        port: flags.port,
        index: "classifier.html",
        route: (path, req, res) => {
          if (path === "/model.safetensors") {
            statSync(flags.weights);
            sendFile(req, res, flags.weights, false);
            return true;
          }
          if (path === "/model-config.json") {
            res.setHeader("Cache-Control", "no-store");
            sendText(res, 200, config);
            return true;
          }
          return false;
        },
      });
      console.log(`Classifier for ${flags.weights}: ${server.url} (Ctrl-C to stop)`);
      await new Promise<void>((resolve) => process.once("SIGINT", resolve));
      await server.close();
    });
}
