// The reference backend: plain TypeScript loops, written to be read. It is the specification the
// native kernels are tested against, and the fallback when the addon is not built.
import type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";
import { roundBf16Reference } from "./bf16.js";
import { checkArgs } from "./checks.js";

/** Row-major GEMM with an i-k-j loop order (contiguous inner loop when B is not transposed). */
function gemm(
  c: Float32Array,
  a: Float32Array,
  b: Float32Array,
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
  beta: 0 | 1,
): void {
  if (beta === 0) c.fill(0, 0, m * n);
  // A zero of A skips its term unless that row of op(B) holds an Inf or NaN, where 0 * Inf = NaN must show.
  const skippable = new Uint8Array(k);
  for (let p = 0; p < k; p++) {
    let finite = true;
    for (let j = 0; j < n && finite; j++) finite = Number.isFinite(transB ? b[j * k + p] : b[p * n + j]);
    skippable[p] = finite ? 1 : 0;
  }
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const aip = transA ? a[p * m + i] : a[i * k + p];
      if (aip === 0 && skippable[p]) continue;
      if (transB) for (let j = 0; j < n; j++) row[j] += aip * b[j * k + p];
      else {
        const off = p * n;
        for (let j = 0; j < n; j++) row[j] += aip * b[off + j];
      }
    }
    const off = i * n;
    for (let j = 0; j < n; j++) c[off + j] += row[j];
  }
}

/**
 * im2col: unfold one image x (cIn, h, w) into cols (cIn*kh*kw, outH*outW), so that the convolution is
 * the GEMM w (cOut, cIn*kh*kw) x cols. Out-of-image taps (padding) read as 0.
 */
function im2col(cols: Float32Array, x: Float32Array, xOff: number, g: Conv2dGeometry): void {
  const { cIn, h, w, kh, kw, strideH, strideW, padH, padW, outH, outW } = g;
  const plane = outH * outW;
  for (let ci = 0; ci < cIn; ci++)
    for (let ki = 0; ki < kh; ki++)
      for (let kj = 0; kj < kw; kj++) {
        const rowOff = ((ci * kh + ki) * kw + kj) * plane;
        for (let oy = 0; oy < outH; oy++) {
          const iy = oy * strideH - padH + ki;
          for (let ox = 0; ox < outW; ox++) {
            const ix = ox * strideW - padW + kj;
            cols[rowOff + oy * outW + ox] =
              iy >= 0 && iy < h && ix >= 0 && ix < w ? x[xOff + (ci * h + iy) * w + ix] : 0;
          }
        }
      }
}

/** col2im: the adjoint of im2col, accumulating cols back into one image dx (cIn, h, w). */
function col2im(dx: Float32Array, dxOff: number, cols: Float32Array, g: Conv2dGeometry): void {
  const { cIn, h, w, kh, kw, strideH, strideW, padH, padW, outH, outW } = g;
  const plane = outH * outW;
  for (let ci = 0; ci < cIn; ci++)
    for (let ki = 0; ki < kh; ki++)
      for (let kj = 0; kj < kw; kj++) {
        const rowOff = ((ci * kh + ki) * kw + kj) * plane;
        for (let oy = 0; oy < outH; oy++) {
          const iy = oy * strideH - padH + ki;
          if (iy < 0 || iy >= h) continue;
          for (let ox = 0; ox < outW; ox++) {
            const ix = ox * strideW - padW + kj;
            if (ix >= 0 && ix < w) dx[dxOff + (ci * h + iy) * w + ix] += cols[rowOff + oy * outW + ox];
          }
        }
      }
}

export class ReferenceBackend implements Backend {
  readonly name = "reference" as const;

  numThreads(): number {
    return 1;
  }

  setNumThreads(_n: number): void {}

  gemm(
    c: Float32Array,
    a: Float32Array,
    b: Float32Array,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    beta: 0 | 1,
  ): void {
    checkArgs.gemm(c, a, b, m, n, k);
    gemm(c, a, b, m, n, k, transA, transB, beta);
  }

  /** The definition of bf16 mixed precision: round both operands, then the float32 GEMM above. */
  gemmBf16(
    c: Float32Array,
    a: Float32Array,
    b: Float32Array,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    beta: 0 | 1,
  ): void {
    checkArgs.gemm(c, a, b, m, n, k);
    const ab = new Float32Array(a.length);
    const bb = new Float32Array(b.length);
    roundBf16Reference(ab, a);
    roundBf16Reference(bb, b);
    gemm(c, ab, bb, m, n, k, transA, transB, beta);
  }

  roundBf16(y: Float32Array, x: Float32Array): void {
    roundBf16Reference(y, x);
  }

  conv2dForward(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): void {
    checkArgs.conv2dForward(y, x, w, bias, g);
    const kdim = g.cIn * g.kh * g.kw;
    const plane = g.outH * g.outW;
    const cols = new Float32Array(kdim * plane);
    const out = new Float32Array(g.cOut * plane);
    for (let b = 0; b < g.n; b++) {
      im2col(cols, x, b * g.cIn * g.h * g.w, g);
      gemm(out, w, cols, g.cOut, plane, kdim, false, false, 0);
      const yOff = b * g.cOut * plane;
      for (let co = 0; co < g.cOut; co++) {
        const bv = bias ? bias[co] : 0;
        for (let p = 0; p < plane; p++) {
          const v = out[co * plane + p] + bv;
          y[yOff + co * plane + p] = relu && v < 0 ? 0 : v;
        }
      }
    }
  }

  // The input gradient of a convolution is itself a convolution: dx = col2im(w^T dy), i.e. dy correlated
  // with the flipped kernel at stride 1 over a dilated dy. We compute it as GEMM + col2im.
  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null = null,
  ): void {
    checkArgs.conv2dBackwardInput(dx, dy, w, g, reluMask);
    const kdim = g.cIn * g.kh * g.kw;
    const plane = g.outH * g.outW;
    const cols = new Float32Array(kdim * plane);
    const dyImg = new Float32Array(g.cOut * plane);
    dx.fill(0);
    for (let b = 0; b < g.n; b++) {
      dyImg.set(dy.subarray(b * g.cOut * plane, (b + 1) * g.cOut * plane));
      gemm(cols, w, dyImg, kdim, plane, g.cOut, true, false, 0);
      col2im(dx, b * g.cIn * g.h * g.w, cols, g);
    }
    if (reluMask) this.reluBackward(dx, dx, reluMask);
  }

  // dw (cOut, cIn*kh*kw) = sum over the batch of dy_b (cOut, plane) x cols_b^T.
  conv2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void {
    checkArgs.conv2dBackwardWeight(dw, db, dy, x, g);
    const kdim = g.cIn * g.kh * g.kw;
    const plane = g.outH * g.outW;
    const cols = new Float32Array(kdim * plane);
    const dyImg = new Float32Array(g.cOut * plane);
    dw.fill(0);
    for (let b = 0; b < g.n; b++) {
      im2col(cols, x, b * g.cIn * g.h * g.w, g);
      dyImg.set(dy.subarray(b * g.cOut * plane, (b + 1) * g.cOut * plane));
      gemm(dw, dyImg, cols, g.cOut, kdim, plane, false, true, 1);
    }
    if (db) {
      for (let co = 0; co < g.cOut; co++) {
        let s = 0;
        for (let b = 0; b < g.n; b++) {
          const off = (b * g.cOut + co) * plane;
          for (let p = 0; p < plane; p++) s += dy[off + p];
        }
        db[co] = s;
      }
    }
  }

  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void {
    checkArgs.maxPool2dForward(y, argmax, x, g);
    const inPlane = g.h * g.w;
    const outPlane = g.outH * g.outW;
    for (let nc = 0; nc < g.n * g.c; nc++) {
      const xOff = nc * inPlane;
      for (let oy = 0; oy < g.outH; oy++)
        for (let ox = 0; ox < g.outW; ox++) {
          let best = Number.NEGATIVE_INFINITY;
          let bestIdx = -1;
          for (let ki = 0; ki < g.kh; ki++) {
            const iy = oy * g.strideH - g.padH + ki;
            if (iy < 0 || iy >= g.h) continue;
            for (let kj = 0; kj < g.kw; kj++) {
              const ix = ox * g.strideW - g.padW + kj;
              if (ix < 0 || ix >= g.w) continue;
              const v = x[xOff + iy * g.w + ix];
              // NaN propagates, as in PyTorch.
              if (v > best || Number.isNaN(v) || bestIdx < 0) {
                best = v;
                bestIdx = iy * g.w + ix;
                if (Number.isNaN(v)) break;
              }
            }
          }
          const o = nc * outPlane + oy * g.outW + ox;
          y[o] = best;
          argmax[o] = bestIdx;
        }
    }
  }

  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut: Float32Array | null = null,
  ): void {
    checkArgs.maxPool2dBackward(dx, dy, argmax, g, reluOut);
    dx.fill(0);
    const inPlane = g.h * g.w;
    const outPlane = g.outH * g.outW;
    for (let nc = 0; nc < g.n * g.c; nc++)
      for (let p = 0; p < outPlane; p++) {
        const idx = argmax[nc * outPlane + p];
        if (reluOut && !(reluOut[nc * outPlane + p] > 0)) continue;
        if (idx >= 0 && idx < inPlane) dx[nc * inPlane + idx] += dy[nc * outPlane + p];
      }
  }

  relu(y: Float32Array, x: Float32Array): void {
    checkArgs.relu(y, x);
    for (let i = 0; i < x.length; i++) y[i] = x[i] > 0 || Number.isNaN(x[i]) ? x[i] : 0;
  }

  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void {
    checkArgs.reluBackward(dx, dy, y);
    for (let i = 0; i < y.length; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
  }

  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void {
    checkArgs.mul(y, x, mask);
    for (let i = 0; i < x.length; i++) y[i] = x[i] * mask[i];
  }

  addInPlace(y: Float32Array, x: Float32Array): void {
    checkArgs.addInPlace(y, x);
    for (let i = 0; i < y.length; i++) y[i] += x[i];
  }

  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    checkArgs.addRowBias(y, bias, rows, cols);
    for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) y[r * cols + j] += bias[j];
  }

  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): number {
    checkArgs.softmaxCrossEntropy(dlogits, logits, targets, n, c);
    let loss = 0;
    for (let i = 0; i < n; i++) {
      const t = targets[i];
      if (!(t >= 0 && t < c)) throw new RangeError(`Expected target class in [0, ${c}) but received ${t}`);
      const off = i * c;
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < c; j++) if (logits[off + j] > max) max = logits[off + j];
      let sum = 0;
      for (let j = 0; j < c; j++) sum += Math.exp(logits[off + j] - max);
      const logSum = Math.log(sum) + max;
      loss += logSum - logits[off + t];
      for (let j = 0; j < c; j++)
        dlogits[off + j] = (Math.exp(logits[off + j] - logSum) - (j === t ? 1 : 0)) / n;
    }
    return loss / n;
  }

  batchNormForwardTrain(
    y: Float32Array,
    saveMean: Float32Array,
    saveInvStd: Float32Array,
    x: Float32Array,
    gamma: Float32Array,
    beta: Float32Array,
    n: number,
    c: number,
    hw: number,
    eps: number,
    relu = false,
  ): void {
    checkArgs.batchNormForwardTrain(y, saveMean, saveInvStd, x, gamma, beta, n, c, hw);
    const count = n * hw;
    for (let ch = 0; ch < c; ch++) {
      let sum = 0;
      for (let b = 0; b < n; b++) {
        const off = (b * c + ch) * hw;
        for (let p = 0; p < hw; p++) sum += x[off + p];
      }
      const mean = sum / count;
      let sq = 0;
      for (let b = 0; b < n; b++) {
        const off = (b * c + ch) * hw;
        for (let p = 0; p < hw; p++) sq += (x[off + p] - mean) ** 2;
      }
      const invStd = 1 / Math.sqrt(sq / count + eps);
      saveMean[ch] = mean;
      saveInvStd[ch] = invStd;
      const scale = gamma[ch] * invStd;
      const shift = beta[ch] - mean * scale;
      for (let b = 0; b < n; b++) {
        const off = (b * c + ch) * hw;
        for (let p = 0; p < hw; p++) y[off + p] = x[off + p] * scale + shift;
        if (relu) for (let p = 0; p < hw; p++) y[off + p] = Math.max(0, y[off + p]);
      }
    }
  }

  channelAffine(
    y: Float32Array,
    x: Float32Array,
    scale: Float32Array,
    shift: Float32Array,
    n: number,
    c: number,
    hw: number,
    relu = false,
  ): void {
    checkArgs.channelAffine(y, x, scale, shift, n, c, hw);
    for (let b = 0; b < n; b++)
      for (let ch = 0; ch < c; ch++) {
        const off = (b * c + ch) * hw;
        for (let p = 0; p < hw; p++) {
          const v = x[off + p] * scale[ch] + shift[ch];
          y[off + p] = relu ? Math.max(0, v) : v;
        }
      }
  }

  // With xhat = (x - mean) * invStd and m = n*hw:
  // dx = gamma * invStd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat)).
  batchNormBackward(
    dx: Float32Array,
    dgamma: Float32Array,
    dbeta: Float32Array,
    dy: Float32Array,
    x: Float32Array,
    gamma: Float32Array,
    saveMean: Float32Array,
    saveInvStd: Float32Array,
    n: number,
    c: number,
    hw: number,
  ): void {
    checkArgs.batchNormBackward(dx, dy, x, n, c, hw);
    const m = n * hw;
    for (let ch = 0; ch < c; ch++) {
      const mean = saveMean[ch];
      const invStd = saveInvStd[ch];
      let sumDy = 0;
      let sumDyXhat = 0;
      for (let b = 0; b < n; b++) {
        const off = (b * c + ch) * hw;
        for (let p = 0; p < hw; p++) {
          sumDy += dy[off + p];
          sumDyXhat += dy[off + p] * (x[off + p] - mean) * invStd;
        }
      }
      dgamma[ch] = sumDyXhat;
      dbeta[ch] = sumDy;
      const k = (gamma[ch] * invStd) / m;
      for (let b = 0; b < n; b++) {
        const off = (b * c + ch) * hw;
        for (let p = 0; p < hw; p++) {
          const xhat = (x[off + p] - mean) * invStd;
          dx[off + p] = k * (m * dy[off + p] - sumDy - xhat * sumDyXhat);
        }
      }
    }
  }

  sgdStep(param: Float32Array, grad: Float32Array, buf: Float32Array | null, o: SgdOptions): void {
    checkArgs.sgdStep(param, grad, buf, o);
    for (let i = 0; i < param.length; i++) {
      let d = grad[i] + o.weightDecay * param[i];
      if (o.momentum !== 0 && buf) {
        buf[i] = o.firstStep ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
      }
      param[i] -= o.lr * d;
    }
  }
}
