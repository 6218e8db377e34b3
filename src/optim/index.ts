export { SGD, type SgdConfig } from "./sgd.js";
