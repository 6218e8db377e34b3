// The initialisation schemes of a training run (fit's --init), applied to a model's conv and linear
// weights in module order, so a seed gives the same weights wherever the run is started (fit, the
// browser's training page).
import { noGrad } from "../autograd.js";
import * as init from "../nn/init.js";
import { Conv2d, Linear } from "../nn/layers.js";
import type { Module } from "../nn/module.js";

export type InitScheme = "xavier" | "default" | "kaiming";

/** "xavier": Xavier-uniform weights (d2l's init_cnn); "kaiming": He-normal, fan out; "default": as built. */
export function applyInit(model: Module, scheme: InitScheme): void {
  if (scheme === "default") return;
  noGrad(() => {
    for (const m of model.modules())
      if (m instanceof Conv2d || m instanceof Linear) {
        if (scheme === "xavier") init.xavierUniform_(m.weight);
        else init.kaimingNormal_(m.weight, { mode: "fan_out", nonlinearity: "relu" });
      }
  });
}
