// Buffer reuse for large activations and gradients.
//
// A training step at 224x224 allocates about 2.7 GB of Float32Arrays (activations, their gradients,
// max-pool indices). Fresh ArrayBuffers of that size come from mmap, so every page is faulted in and
// zeroed by the kernel on first touch: about a third of the step went to the system. Instead, the ops
// that overwrite every element of their output take it from this pool, and buffers come back to it at
// the moments it is certain nothing can read them again:
//   - a gradient flowing between two ops, after the op that consumed it has run (autograd.ts);
//   - an activation produced inside a Sequential and never returned from it (`markInternal`), once the
//     backward pass has run the op that produced it, or at once in inference (noGrad);
//   - max-pool indices, after the max-pool backward or at once when no graph is recorded.
// A buffer whose ArrayBuffer was handed to the caller (`markExposed`) never comes back. Pooled buffers
// are not zeroed: only outputs a kernel overwrites in full may come from `takeFloat32`/`takeInt32`.
// Small buffers (< MIN_BYTES) are left to the allocator. A request takes a free buffer of its own size, else
// the smallest free one up to twice as large (the typed array then views its first bytes only), else a new
// one of its own size. `VGG_BUFFER_POOL=0` turns reuse off.
// Below autograd and tensor in the core's import order: it knows a tensor only as its buffer.

/** What the pool needs of a tensor (tensor.ts's Tensor is one). */
export interface PoolTensor {
  readonly data: Float32Array;
}

const MIN_BYTES = 1 << 18;
// (`process` is absent in the browser build.)
const enabled = typeof process === "undefined" || process.env?.VGG_BUFFER_POOL !== "0";

/** Free ArrayBuffers by byte length. */
const free = new Map<number, ArrayBuffer[]>();
let freeBytes = 0;
/**
 * The most free bytes kept. When a returned buffer would pass it, free buffers of the sizes asked for
 * least recently go first (a training run's last, smaller batch and the test batches leave sizes that
 * are not asked for again until the next epoch end); only when none older than its own size is left is
 * the returned buffer itself left to the garbage collector.
 */
let limitBytes = 4 * 1024 ** 3;
/** When each size was last asked for (a counter of `take` calls). */
const lastAsked = new Map<number, number>();
let asks = 0;
/** ArrayBuffers that came from the pool (or were made by it); only these go back. */
const pooled = new WeakSet<ArrayBuffer>();
/** ArrayBuffers that are (or share memory with) a tensor handed to the caller. */
const exposed = new WeakSet<ArrayBuffer>();
/** The tensor that owns each pooled buffer (the op output it was taken for). */
const owners = new WeakMap<ArrayBuffer, PoolTensor>();
/** Tensors a Sequential produced and did not return. */
const internal = new WeakSet<PoolTensor>();
/** ArrayBuffers currently free in the pool (guards against a double release). */
const inPool = new WeakSet<ArrayBuffer>();

/**
 * The size of the free buffers to take for `bytes`: that size, else the smallest free size up to twice it
 * (a smaller batch runs in a larger batch's buffers, whose pages are already in memory, instead of keeping
 * buffers of its own: a server sees every batch size from 1 to --max-batch); undefined when none is free.
 */
function fittingSize(bytes: number): number | undefined {
  if ((free.get(bytes)?.length ?? 0) > 0) return bytes;
  let best: number | undefined;
  for (const [size, list] of free)
    if (list.length > 0 && size > bytes && size <= 2 * bytes && (best === undefined || size < best))
      best = size;
  return best;
}

function take(bytes: number): ArrayBuffer {
  if (enabled && bytes >= MIN_BYTES) {
    const size = fittingSize(bytes);
    if (size !== undefined) {
      lastAsked.set(size, ++asks);
      const buf = free.get(size)?.pop() as ArrayBuffer;
      freeBytes -= size;
      inPool.delete(buf);
      return buf;
    }
    lastAsked.set(bytes, ++asks);
    const fresh = new ArrayBuffer(bytes);
    pooled.add(fresh);
    return fresh;
  }
  return new ArrayBuffer(bytes);
}

/** n floats whose contents are unspecified: the caller must overwrite every element. */
export function takeFloat32(n: number): Float32Array {
  return new Float32Array(take(n * 4), 0, n);
}

/** n int32 values whose contents are unspecified: the caller must overwrite every element. */
export function takeInt32(n: number): Int32Array {
  return new Int32Array(take(n * 4), 0, n);
}

/** Returns a buffer nothing will read again to the pool (no-op for buffers that are not pooled). */
export function give(a: Float32Array | Int32Array | null | undefined): void {
  if (!a) return;
  const buf = a.buffer as ArrayBuffer;
  if (!pooled.has(buf) || exposed.has(buf) || inPool.has(buf)) return;
  const bytes = buf.byteLength;
  if (freeBytes + bytes > limitBytes && !evictOlderThan(bytes, freeBytes + bytes - limitBytes)) return;
  inPool.add(buf);
  owners.delete(buf);
  let list = free.get(bytes);
  if (!list) free.set(bytes, (list = []));
  list.push(buf);
  freeBytes += bytes;
}

/**
 * Drops free buffers of sizes asked for before `bytes` was, oldest first, until `need` bytes are gone.
 * Returns whether it got there.
 */
function evictOlderThan(bytes: number, need: number): boolean {
  const own = lastAsked.get(bytes) ?? 0;
  const sizes = [...free.keys()]
    .filter((b) => (lastAsked.get(b) ?? 0) < own)
    .sort((a, b) => (lastAsked.get(a) ?? 0) - (lastAsked.get(b) ?? 0));
  for (const size of sizes) {
    const list = free.get(size) as ArrayBuffer[];
    while (list.length > 0 && need > 0) {
      const old = list.pop() as ArrayBuffer;
      inPool.delete(old);
      freeBytes -= size;
      need -= size;
    }
    if (list.length === 0) free.delete(size);
    if (need <= 0) return true;
  }
  return false;
}

/** Records t as the owner of its (pooled) buffer; views that share it are not owners. */
export function adopt<T extends PoolTensor>(t: T): T {
  const buf = t.data.buffer as ArrayBuffer;
  if (pooled.has(buf) && !owners.has(buf)) owners.set(buf, t);
  return t;
}

/** Marks a tensor a Sequential produced and consumed itself (never returned to its caller). */
export function markInternal(t: PoolTensor): void {
  internal.add(t);
}

/** Marks a tensor handed to a caller: its memory is never reused. */
export function markExposed(t: PoolTensor): void {
  exposed.add(t.data.buffer as ArrayBuffer);
}

/**
 * Returns an internal tensor's buffer to the pool when t owns it and nothing else can read it: its
 * consumers have run (backward walks them first) and it was never exposed.
 */
export function releaseInternal(t: PoolTensor): void {
  if (!internal.has(t)) return;
  const buf = t.data.buffer as ArrayBuffer;
  if (owners.get(buf) === t) give(t.data);
}

/** Sets the most free bytes the pool keeps (tests); returns the previous value. */
export function setPoolLimit(bytes: number): number {
  const old = limitBytes;
  limitBytes = bytes;
  return old;
}

/** Pool statistics, for tests. */
export function poolStats(): { freeBytes: number; freeBuffers: number; limitBytes: number } {
  let n = 0;
  for (const list of free.values()) n += list.length;
  return { freeBytes, freeBuffers: n, limitBytes };
}
