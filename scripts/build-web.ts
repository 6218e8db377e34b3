// `npm run build:web`: bundles the two pages (dashboard, classifier) into dist/web with esbuild. The
// classifier runs the library itself in the browser: src/backend/index.ts (which loads the Node addon) is
// swapped for src/web/browser-backend.ts, and the Node-only modules the library's file helpers import are
// replaced by an empty module, since the pages never call those helpers (they fetch and decode in the
// browser). `--weights FILE` also copies a model next to the page, for hosting the folder as it is.
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";
import { FASHION_MNIST_CLASSES } from "../src/data/fashion-mnist.js";

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
    b.onLoad({ filter: /.*/, namespace: "node-only" }, (args) => ({
      // An empty CommonJS module: named imports of it are undefined, and nothing the pages run calls them.
      contents: `module.exports = {}; // ${args.path} is not available in the browser`,
      loader: "js",
    }));
  },
};

export async function buildWeb(
  options: { out?: string; weights?: string; minify?: boolean } = {},
): Promise<string> {
  const out = options.out ?? WEB_OUT;
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: {
      dashboard: join(ROOT, "src/web/client/dashboard.ts"),
      classifier: join(ROOT, "src/web/client/classifier.ts"),
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
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--weights");
  const out = await buildWeb({ weights: i > 0 ? process.argv[i + 1] : undefined });
  console.log(`Built the web pages in ${out}`);
}
