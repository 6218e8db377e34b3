// Losses: log_softmax (stable: x - max - log sum exp), nll_loss and cross_entropy (mean reduction).
import { record } from "../autograd.js";
import { backend } from "../backend/index.js";
import { formatShape, Tensor } from "../tensor.js";

export type Targets = Int32Array | readonly number[];

function checkTargets(targets: Targets, n: number, c: number, op: string): Int32Array {
  if (targets.length !== n)
    throw new RangeError(`Expected ${n} targets for ${op} but received ${targets.length}`);
  const t = Int32Array.from(targets);
  for (let i = 0; i < n; i++)
    if (!(t[i] >= 0 && t[i] < c) || t[i] !== targets[i])
      throw new RangeError(
        `Expected target class indices in [0, ${c}) for ${op} but target ${i} is ${targets[i]}`,
      );
  return t;
}

function expect2d(x: Tensor, op: string): [number, number] {
  if (x.ndim !== 2)
    throw new RangeError(`Expected input of shape [N, C] for ${op} but received ${formatShape(x.shape)}`);
  return [x.shape[0], x.shape[1]];
}

/** log_softmax over dim 1 of (N, C). Backward: dx = dy - softmax * sum(dy). */
export function logSoftmax(x: Tensor): Tensor {
  const [n, c] = expect2d(x, "log_softmax");
  const y = new Float32Array(x.size);
  for (let i = 0; i < n; i++) {
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < c; j++) max = Math.max(max, x.data[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(x.data[i * c + j] - max);
    const lse = max + Math.log(s);
    for (let j = 0; j < c; j++) y[i * c + j] = x.data[i * c + j] - lse;
  }
  return record(new Tensor(y, x.shape), "log_softmax", [x], (dy) => {
    const dx = new Float32Array(x.size);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < c; j++) s += dy[i * c + j];
      for (let j = 0; j < c; j++) dx[i * c + j] = dy[i * c + j] - Math.exp(y[i * c + j]) * s;
    }
    return [dx];
  });
}

/** Negative log-likelihood of log-probabilities (N, C), mean over the batch. */
export function nllLoss(logProbs: Tensor, targets: Targets): Tensor {
  const [n, c] = expect2d(logProbs, "nll_loss");
  const t = checkTargets(targets, n, c, "nll_loss");
  let loss = 0;
  for (let i = 0; i < n; i++) loss -= logProbs.data[i * c + t[i]];
  return record(new Tensor(Float32Array.of(loss / n), []), "nll_loss", [logProbs], (g) => {
    const dx = new Float32Array(n * c);
    for (let i = 0; i < n; i++) dx[i * c + t[i]] = -g[0] / n;
    return [dx];
  });
}

/** Cross-entropy of logits (N, C) against class indices, mean over the batch (fused softmax + NLL). */
export function crossEntropy(logits: Tensor, targets: Targets): Tensor {
  const [n, c] = expect2d(logits, "cross_entropy");
  const t = checkTargets(targets, n, c, "cross_entropy");
  const dlogits = new Float32Array(n * c);
  const loss = backend().softmaxCrossEntropy(dlogits, logits.data, t, n, c);
  return record(new Tensor(Float32Array.of(loss), []), "cross_entropy", [logits], (g) => {
    const dx = new Float32Array(n * c);
    for (let i = 0; i < dx.length; i++) dx[i] = dlogits[i] * g[0];
    return [dx];
  });
}
