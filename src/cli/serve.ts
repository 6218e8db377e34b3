// `vgg serve --weights FILE`: the inference API over HTTP (src/serve/) and, unless --api, the page that
// classifies pictures and drawings in the browser (the server hands out the page, the weights and the
// model's configuration; the browser runs the network itself). Either way but --api, and alone without
// --weights, the page that trains in the browser (train.html) and the Fashion-MNIST files it reads (/data/).
import { statSync } from "node:fs";
import { Command } from "commander";
import { configureBackend } from "../backend/index.js";
import { parseArch, type VggConfig } from "../models/vgg.js";
import { startInferenceServer } from "../serve/server.js";
import { fashionMnistRoute } from "../web/data-route.js";
import { sendFile, sendText } from "../web/http.js";
import { startWebServer } from "../web/server.js";
import { addListenOptions, type ListenFlags } from "./dashboard.js";
import {
  addModelOptions,
  addRuntimeOptions,
  imageSizeFor,
  type ModelFlags,
  positiveInt,
  type RuntimeFlags,
  vggOptions,
} from "./model-options.js";
import { loadWeightsForCli } from "./weights.js";

export const SERVE_PORT = 8080;

interface ServeFlags extends ModelFlags, RuntimeFlags, ListenFlags {
  weights?: string;
  dataDir?: string;
  api?: boolean;
  modelName: string;
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  maxBodyBytes: number;
  requestTimeoutMs: number;
  workers?: number;
}

function nonNegative(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0)
      throw new Error(`Expected ${name} to be a number >= 0 but received "${v}"`);
    return n;
  };
}

/**
 * Loads the weights once here, so that a bad file or wrong flags fail now with the CLI's message; the model
 * thread loads its own copy, and this one is left to the garbage collector.
 */
function checkedConfig(flags: ServeFlags & { weights: string }): VggConfig {
  const { model } = loadWeightsForCli(flags.weights, flags);
  const pageable = !(model.config.layout === "torchvision" && model.config.inChannels === 3);
  if (!flags.api && !pageable)
    throw new Error(
      `Expected a Fashion-MNIST model (1 input channel) but ${flags.weights} is an ImageNet-layout model; the page classifies Fashion-MNIST (serve the API alone with --api)`,
    );
  imageSizeFor(model.config, flags);
  return model.config;
}

function stopSignal(): Promise<string> {
  return new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
}

export function serveCommand(): Command {
  return addListenOptions(addRuntimeOptions(addModelOptions(new Command("serve"), { ratio: 4 })), SERVE_PORT)
    .description(
      "serve predictions over HTTP (Open Inference Protocol v2, /v1/classify) and a classifier page; the page that trains in the browser (train.html, alone without --weights)",
    )
    .option(
      "--weights <file>",
      "safetensors weights (vgg-ts, or PyTorch with the model flags); without: only the training page",
    )
    .option("--data-dir <dir>", "Fashion-MNIST folder for the training page (else where vgg train looks)")
    .option("--api", "serve only the inference API, not the browser page")
    .option("--model-name <name>", "the model's name in /v2/models/{name}", "vgg")
    .option("--max-batch <n>", "most images per batch", positiveInt("--max-batch"), 32)
    .option(
      "--max-delay-ms <ms>",
      "longest wait for a batch to fill once a model thread is free (none when every open connection has a request in)",
      nonNegative("--max-delay-ms"),
      5,
    )
    .option("--max-queue <n>", "images allowed to wait; beyond it 503", positiveInt("--max-queue"), 256)
    .option(
      "--max-body-bytes <n>",
      "largest request body; beyond it 413",
      positiveInt("--max-body-bytes"),
      8 << 20,
    )
    .option(
      "--workers <n>",
      "model threads, each running whole batches with its own copy of the weights, on 1 kernel thread each unless --threads says (default: 2 model threads sharing a kernel pool of all cores, 1 on a 1-core machine)",
      positiveInt("--workers"),
    )
    .option(
      "--request-timeout-ms <ms>",
      "answer 504 after this long (0: never)",
      nonNegative("--request-timeout-ms"),
      30_000,
    )
    .action(async (flags: ServeFlags) => {
      if ((flags.backend ?? process.env.VGG_BACKEND) === "webgpu")
        throw new Error(
          "vgg serve runs on the CPU backends (native, reference); --backend webgpu is for train, eval, predict and bench",
        );
      const data = fashionMnistRoute({ dataDir: flags.dataDir });
      const weights = flags.weights;
      if (weights === undefined) {
        if (flags.api)
          throw new Error("Expected --weights FILE with --api: the inference API serves a model");
        const page = await startWebServer({
          host: flags.host,
          port: flags.port,
          index: "train.html",
          route: data,
        });
        console.log(
          `Training page (trains in the browser, WebGPU where it has it): ${page.url} (no --weights, so no classifier or API; Ctrl-C or SIGTERM to stop)`,
        );
        const signal = await stopSignal();
        console.log(`${signal}: stopping`);
        await page.close();
        return;
      }
      configureBackend(flags);
      const config = JSON.stringify(checkedConfig({ ...flags, weights }));
      const server = await startInferenceServer({
        ...flags,
        source: {
          weights,
          fallback: { convArch: parseArch(flags.arch), options: vggOptions(flags) },
          // The worker threads have their own module state: --threads and --precision must reach them.
          runtime: { precision: flags.precision, threads: flags.threads },
        },
        page: flags.api
          ? undefined
          : {
              index: "classifier.html",
              route: (path, req, res) => {
                if (path === "/model.safetensors") {
                  statSync(weights);
                  sendFile(req, res, weights, false);
                  return true;
                }
                if (path === "/model-config.json") {
                  res.setHeader("Cache-Control", "no-store");
                  sendText(res, 200, config);
                  return true;
                }
                return data(path, req, res);
              },
            },
      });
      console.log(
        `${flags.api ? "Inference API" : "Classifier page and inference API"} for ${weights}: ${server.url} (model "${flags.modelName}"${flags.api ? "" : `; the training page: ${server.url}train.html`}; Ctrl-C or SIGTERM to stop)`,
      );
      const signal = await stopSignal();
      console.log(`${signal}: answering the requests already received, then stopping`);
      await server.drain();
    });
}
