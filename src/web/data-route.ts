// The training page's data: `vgg serve` answers GET /data/<IDX file name> with the Fashion-MNIST file that
// `vgg train` would read (the same lookup: --data-dir, FASHION_MNIST_DIR, the user cache, the system
// folder), compressed or not as found; the page tells the two apart by the gzip magic.
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  candidateLocations,
  FASHION_MNIST_FILES,
  type LocateOptions,
  locateFashionMnist,
  type Split,
} from "../data/fashion-mnist.js";
import { sendFile, sendText } from "./http.js";

export const DATA_PREFIX = "/data/";

/** Which split and file a name is (with or without .gz), or null. */
function fileOf(name: string): { split: Split; kind: "images" | "labels" } | null {
  const bare = name.endsWith(".gz") ? name.slice(0, -3) : name;
  for (const split of ["train", "test"] as const)
    for (const kind of ["images", "labels"] as const)
      if (FASHION_MNIST_FILES[split][kind] === bare) return { split, kind };
  return null;
}

/** A route for WebServerOptions.route: answers /data/* and returns true, else false. */
export function fashionMnistRoute(
  options: LocateOptions,
): (path: string, req: IncomingMessage, res: ServerResponse) => boolean {
  return (path, req, res) => {
    if (!path.startsWith(DATA_PREFIX)) return false;
    const name = path.slice(DATA_PREFIX.length);
    const file = fileOf(name);
    if (!file) {
      const names = Object.values(FASHION_MNIST_FILES).flatMap((f) => [f.images, f.labels]);
      sendText(res, 404, `Expected one of ${names.join(", ")} under ${DATA_PREFIX} but received "${name}"`);
      return true;
    }
    const found = locateFashionMnist(file.split, options);
    if (!found) {
      const looked = candidateLocations(options)
        .map((l) => `${l.dir} (${l.source})`)
        .join(", ");
      sendText(
        res,
        404,
        `The server found no Fashion-MNIST ${file.split} files in ${looked}; install Debian's dataset-fashion-mnist, ` +
          "run `vgg train` once (it downloads them into the cache) or start `vgg serve --data-dir DIR`",
      );
      return true;
    }
    sendFile(req, res, file.kind === "images" ? found.imagesPath : found.labelsPath);
    return true;
  };
}
