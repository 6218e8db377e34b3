// Crash-safe file replacement: readers (and a run resumed after SIGKILL or power loss) see either the
// old complete file or the new complete file, never a torn one. The steps are the classic ones:
// write a temp file in the same directory (rename is only atomic within one file system), fsync it
// so its bytes are on disk before the name points at them, rename it over the target, then fsync the
// directory so the rename itself is durable.
//
// `fs` is used through its default export so tests can inject faults with node:test's mock.method.
import fs from "node:fs";
import path from "node:path";

let tempCounter = 0;

/** Writes `data` to `target` atomically; on any error the previous file (if any) is left untouched. */
export function writeFileAtomic(target: string, data: Uint8Array | string): void {
  if (typeof target !== "string" || target.length === 0) {
    throw new TypeError(`Expected a non-empty file path but received ${JSON.stringify(target)}`);
  }
  if (typeof data !== "string" && !(data instanceof Uint8Array)) {
    throw new TypeError(
      `Expected data to be a Uint8Array or string but received ${Object.prototype.toString.call(data)}`,
    );
  }
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const dir = path.dirname(path.resolve(target));
  const temp = path.join(dir, `.${path.basename(target)}.${process.pid}.${tempCounter++}.tmp`);
  const mode = existingMode(target);
  let fd: number | undefined;
  try {
    // "wx": fail rather than clobber if a stale temp of the same name somehow exists.
    fd = fs.openSync(temp, "wx", mode ?? 0o666);
    let written = 0;
    while (written < bytes.byteLength) {
      written += fs.writeSync(fd, bytes, written, bytes.byteLength - written);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    // openSync's mode is filtered by the umask; give a replaced file back its exact permissions.
    if (mode !== undefined) fs.chmodSync(temp, mode);
    fs.renameSync(temp, target);
  } catch (error) {
    if (fd !== undefined) closeQuietly(fd);
    removeQuietly(temp);
    throw error;
  }
  fsyncDirectory(dir);
}

function existingMode(target: string): number | undefined {
  try {
    const stat = fs.statSync(target);
    return stat.isFile() ? stat.mode & 0o7777 : undefined;
  } catch {
    return undefined;
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already failing; the original error is the one worth reporting.
  }
}

function removeQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // The temp file may never have been created.
  }
}

/** Makes the rename durable. Some platforms (Windows) cannot open or fsync a directory; skip there. */
function fsyncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "EISDIR" && code !== "EPERM" && code !== "EINVAL" && code !== "EACCES") throw error;
  } finally {
    if (fd !== undefined) closeQuietly(fd);
  }
}
