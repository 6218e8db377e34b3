// The functional API, as torch.nn.functional: `import { F } from "vgg-ts"`.
export { dropout, relu } from "./activation.js";
export { batchNorm } from "./batchnorm.js";
export { conv2dReluMaxPool2d } from "./conv-relu-pool.js";
export { type Conv2dOptions, conv2d } from "./conv2d.js";
export { add, mean, mul, sub, sum } from "./elementwise.js";
export { linear, matmul } from "./linear.js";
export { crossEntropy, logSoftmax, nllLoss } from "./loss.js";
export { adaptiveAvgPool2d, type MaxPool2dOptions, maxPool2d } from "./pool.js";
export { flatten, reshape } from "./shape.js";
