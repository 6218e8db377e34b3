// Activations: relu (backward masks by the output) and dropout (seeded, inverted scaling).
import { record } from "../autograd.js";
import { backend } from "../backend/index.js";
import { defaultGenerator, type Generator } from "../rng.js";
import { Tensor } from "../tensor.js";

export function relu(x: Tensor): Tensor {
  const y = new Float32Array(x.size);
  backend().relu(y, x.data);
  return record(new Tensor(y, x.shape), "relu", [x], (dy) => {
    const dx = new Float32Array(dy.length);
    backend().reluBackward(dx, dy, y);
    return [dx];
  });
}

/**
 * Dropout: in training, zeroes each element with probability p and scales the rest by 1/(1-p), so the
 * expectation is unchanged; in evaluation it is the identity. The mask comes from the seeded generator.
 */
export function dropout(
  x: Tensor,
  p = 0.5,
  training = true,
  generator: Generator = defaultGenerator,
): Tensor {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`Expected a dropout probability in [0, 1] but received ${p}`);
  if (!training || p === 0) return x;
  const mask = new Float32Array(x.size);
  const keep = p === 1 ? 0 : 1 / (1 - p);
  for (let i = 0; i < mask.length; i++) mask[i] = generator.random() >= p ? keep : 0;
  const y = new Float32Array(x.size);
  backend().mul(y, x.data, mask);
  return record(new Tensor(y, x.shape), "dropout", [x], (dy) => {
    const dx = new Float32Array(dy.length);
    backend().mul(dx, dy, mask);
    return [dx];
  });
}
