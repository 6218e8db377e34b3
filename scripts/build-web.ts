// `npm run build:web`: bundles the three pages (dashboard, classifier, training) into dist/web with esbuild.
// The classifier and the training page run the library itself in the browser: src/backend/index.ts (which loads the Node addon) is
// swapped for src/web/browser-backend.ts, and the Node-only modules the library's file helpers import are
// replaced by an empty module, since the pages never call those helpers (they fetch and decode in the
// browser). `--weights FILE` also copies a model next to the page, for hosting the folder as it is, and
// `--data-dir DIR` the four Fashion-MNIST files (found as `vgg train` finds them) into data/ for the
// training page.
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";
import { FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, locateFashionMnist } from "../src/data/fashion-mnist.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const WEB_OUT = join(ROOT, "dist/web");

const NODE_ONLY = /^(node:.*|pngjs|jpeg-js|fflate|cli-progress|commander)$/;

const browserLibrary: Plugin = {
  name: "vgg-browser",
  setup(b) {
    b.onResolve({ filter: /[/\\]backend[/\\]index\.js$/ }, () => ({
      path: join(ROOT, "src/web/browser-backend.ts"),
    }));
    b.onResolve({ filter: NODE_ONLY }, (args) => ({ path: args.path, namespace: "node-only" }));
    // The MPI addon's loader (reached through the training loop's data-parallel path) reads Node's paths
    // as it loads; the browser never trains data-parallel.
    b.onResolve({ filter: /mpi\.js$/ }, (args) =>
      join(args.resolveDir, args.path) === join(ROOT, "src/distributed/mpi.js")
        ? { path: args.path, namespace: "node-only" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "node-only" }, (args) => ({
      // An empty CommonJS module: named imports of it are undefined, and nothing the pages run calls them.
      contents: `module.exports = {}; // ${args.path} is not available in the browser`,
      loader: "js",
    }));
  },
};

export async function buildWeb(
  options: { out?: string; weights?: string; dataDir?: string; minify?: boolean } = {},
): Promise<string> {
  const out = options.out ?? WEB_OUT;
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: {
      dashboard: join(ROOT, "src/web/client/dashboard.ts"),
      classifier: join(ROOT, "src/web/client/classifier.ts"),
      train: join(ROOT, "src/web/client/train.ts"),
    },
    outdir: out,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: true,
    minify: options.minify ?? true,
    plugins: [browserLibrary],
    logLevel: "warning",
  });
  for (const f of readdirSync(join(ROOT, "web"))) copyFileSync(join(ROOT, "web", f), join(out, f));
  copyFileSync(join(ROOT, "node_modules/uplot/dist/uPlot.min.css"), join(out, "uPlot.min.css"));
  copyFileSync(join(out, "classifier.html"), join(out, "index.html"));
  writeFileSync(join(out, "classes.json"), JSON.stringify(FASHION_MNIST_CLASSES));
  if (options.weights) copyFileSync(options.weights, join(out, "model.safetensors"));
  if (options.dataDir !== undefined) {
    mkdirSync(join(out, "data"), { recursive: true });
    for (const split of ["train", "test"] as const) {
      const found = locateFashionMnist(split, { dataDir: options.dataDir });
      if (!found)
        throw new Error(
          `Expected the Fashion-MNIST ${split} files in ${options.dataDir} or where vgg train looks, but found none`,
        );
      // Under the bare names the page fetches; gzip or raw as found (the page reads the magic).
      const names = FASHION_MNIST_FILES[split];
      copyFileSync(found.imagesPath, join(out, "data", names.images));
      copyFileSync(found.labelsPath, join(out, "data", names.labels));
    }
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (flag: string) => {
    const i = process.argv.indexOf(flag);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const out = await buildWeb({ weights: arg("--weights"), dataDir: arg("--data-dir") });
  console.log(`Built the web pages in ${out}`);
}
