// The `nn` namespace: `import { nn } from "vgg-ts"; new nn.Conv2d(1, 64, 3, { padding: 1 })`.
export * as init from "./init.js";
export {
  AdaptiveAvgPool2d,
  BatchNorm2d,
  Conv2d,
  Dropout,
  Flatten,
  Linear,
  MaxPool2d,
  prepackForInference,
  ReLU,
} from "./layers.js";
export { Module } from "./module.js";
export { Sequential } from "./sequential.js";
