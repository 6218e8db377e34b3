// Downloads files into a directory, verifying each one's MD5 before it appears under its final name:
// bytes stream into a temporary file in the same directory, which is renamed only after the digest matches,
// so an interrupted or corrupt download never leaves a file the loader would pick up.

import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import cliProgress from "cli-progress";

export type FetchFn = (url: string) => Promise<Response>;

export interface DownloadFile {
  name: string;
  md5: string;
}

export interface DownloadOptions {
  /** The base URL the file names are appended to (a trailing slash is added when missing). */
  baseUrl: string;
  /** Directory to write into; created when missing. */
  dir: string;
  files: readonly DownloadFile[];
  /** Injectable for tests; defaults to the global fetch. */
  fetch?: FetchFn;
  /** Show a progress bar on stderr (default: when stderr is a terminal). */
  progress?: boolean;
}

export function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** True when `path` exists and its MD5 matches. */
export function hasVerifiedFile(path: string, md5: string): boolean {
  return existsSync(path) && md5Hex(readFileSync(path)) === md5;
}

function joinUrl(base: string, name: string): string {
  return base.endsWith("/") ? base + name : `${base}/${name}`;
}

/** Downloads every file not already present with the right MD5. Throws on the first failure. */
export async function downloadFiles(options: DownloadOptions): Promise<void> {
  const fetchFn = options.fetch ?? ((url: string) => fetch(url));
  mkdirSync(options.dir, { recursive: true });
  const showBar = options.progress ?? process.stderr.isTTY === true;
  for (const file of options.files) {
    const target = join(options.dir, file.name);
    if (hasVerifiedFile(target, file.md5)) continue;
    await downloadOne(fetchFn, joinUrl(options.baseUrl, file.name), target, file, showBar);
  }
}

async function downloadOne(
  fetchFn: FetchFn,
  url: string,
  target: string,
  file: DownloadFile,
  showBar: boolean,
): Promise<void> {
  const response = await fetchFn(url);
  if (!response.ok || response.body === null) {
    throw new Error(
      `${file.name}: expected HTTP 200 from ${url} but received ${response.status} ${response.statusText}`,
    );
  }
  const total = Number(response.headers.get("content-length") ?? 0);
  const bar = showBar
    ? new cliProgress.SingleBar(
        {
          format: `${file.name.padEnd(28)} [{bar}] {percentage}% | {value}/{total} bytes | ETA {eta_formatted}`,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  bar?.start(total > 0 ? total : 1, 0);
  const temp = `${target}.${process.pid}.${randomBytes(4).toString("hex")}.part`;
  const out = createWriteStream(temp);
  let writeError: Error | undefined;
  out.on("error", (err) => {
    writeError = err;
  });
  const hash = createHash("md5");
  let received = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      received += chunk.length;
      if (writeError !== undefined) throw writeError;
      if (!out.write(chunk)) await once(out, "drain");
      if (bar && total <= 0) bar.setTotal(received); // no content-length: the bar tracks what arrived
      bar?.update(received);
    }
    if (writeError !== undefined) throw writeError;
    out.end();
    if (!out.writableFinished && !out.destroyed) await once(out, "finish");
    if (writeError !== undefined) throw writeError;
    const digest = hash.digest("hex");
    if (digest !== file.md5) {
      throw new Error(
        `${file.name}: expected MD5 ${file.md5} but the ${received} bytes downloaded from ${url} have MD5 ` +
          `${digest}; the download is corrupt or the mirror changed, try again later`,
      );
    }
    renameSync(temp, target);
  } catch (err) {
    // Wait for the descriptor to close so the temporary file cannot be re-created after its removal.
    if (!out.closed) {
      const closed = once(out, "close");
      out.destroy();
      await closed;
    }
    rmSync(temp, { force: true });
    throw err;
  } finally {
    bar?.stop();
  }
}
