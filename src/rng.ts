// A small seedable random number generator (xoshiro128**, seeded through splitmix32). One global
// generator, set by manualSeed(), draws every random number the library uses (init, dropout,
// shuffling, augmentation); its state can be saved and restored for exact resumption.

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Generator {
  private s = new Uint32Array(4);
  /** A spare standard normal from the Box-Muller pair, or NaN when none is cached. */
  private spare = Number.NaN;

  constructor(seed = 0) {
    this.seed(seed);
  }

  seed(seed: number): this {
    if (!Number.isFinite(seed)) throw new RangeError(`Expected a finite seed but received ${seed}`);
    const next = splitmix32(Math.floor(seed) ^ Math.floor(seed / 2 ** 32));
    for (let i = 0; i < 4; i++) this.s[i] = next();
    this.spare = Number.NaN;
    return this;
  }

  /** A uniformly distributed 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1), with 32 random bits. */
  random(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform in [low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.random();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (!Number.isNaN(this.spare)) {
      const v = this.spare;
      this.spare = Number.NaN;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.random();
    const v = this.random();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }

  /**
   * The live xoshiro128** state words (not a copy): a kernel that draws this generator's numbers in its
   * place (the native dropout mask) advances them exactly as as many nextUint32() calls would.
   */
  stateWords(): Uint32Array {
    return this.s;
  }

  /** The full state, for checkpoints. */
  getState(): (number | null)[] {
    return [...this.s, Number.isNaN(this.spare) ? null : this.spare];
  }

  /** Restores a state from getState() (also after a JSON round trip). */
  setState(state: readonly (number | null)[]): void {
    if (state.length !== 5)
      throw new RangeError(`Expected an RNG state of 5 numbers but received ${state.length}`);
    for (let i = 0; i < 4; i++) this.s[i] = Number(state[i]) >>> 0;
    this.spare = state[4] === null ? Number.NaN : Number(state[4]);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The library's global generator. */
export const defaultGenerator = new Generator(0);

/** Seeds every random number the library draws (as torch.manual_seed). */
export function manualSeed(seed: number): void {
  defaultGenerator.seed(seed);
}
