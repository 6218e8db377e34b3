#!/usr/bin/python3
"""Writes test/fixtures/interop/: PyTorch <-> vgg-ts weights in both directions, as safetensors.

Run by hand with Debian's python3-torch, after `npx tsc -p .` (the reverse direction runs vgg-ts):
    /usr/bin/python3 scripts/make_interop_fixtures.py

PyTorch -> vgg-ts: d2l's `vgg(conv_arch)` and torchvision's VGG layout (written out here, torchvision is not
installed; the module tree and so the state dict keys are the same) at 1/32 width, with random weights. Each
model's state dict is saved as NAME.safetensors (no vgg-ts metadata, as a user's export would be) and
NAME.io.safetensors holds a fixed input and PyTorch's eval-mode logits for it.
vgg-ts -> PyTorch: vgg-ts builds and saves models (saveModel, seeded, batch-norm statistics moved by a few
training-mode passes); each file is loaded here with strict load_state_dict and PyTorch's logits for a fixed
input go to NAME.io.safetensors, so the test proves the direction without torch.
predict: a 288x256 PNG and the top-5 ImageNet classes PyTorch gives it with the vgg16 fixture, after the
evaluation transform (the shorter side is already 256, so the resize is the identity; centre crop 224).
The `safetensors` package is not installed here: files are written with struct + json, as
scripts/make_safetensors_fixture.py does.
"""

import json
import os
import struct
import subprocess

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "test", "fixtures", "interop")
DTYPES = {torch.float32: "F32", torch.int64: "I64"}
TORCH_DTYPES = {"F32": torch.float32, "I64": torch.int64}


def save(tensors: dict, metadata: dict, path: str) -> None:
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        data = t.numpy().tobytes()  # little-endian on x86-64
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def load(path: str) -> tuple:
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = blob[8 + n :]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=TORCH_DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"])
    return tensors, metadata


# d2l's VGG (chapter "Networks Using Blocks").
def vgg_block(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def d2l_vgg(conv_arch, in_channels, input_size, width, classes):
    blocks = []
    for num_convs, out_channels in conv_arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    s = input_size // 2 ** len(conv_arch)
    return nn.Sequential(
        *blocks,
        nn.Flatten(),
        nn.Linear(in_channels * s * s, width), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(width, classes),
    )


# torchvision's VGG module tree: features / avgpool / classifier.
class TorchvisionVGG(nn.Module):
    def __init__(self, conv_arch, batch_norm, width, classes, in_channels=3):
        super().__init__()
        layers = []
        for num_convs, out_channels in conv_arch:
            for _ in range(num_convs):
                layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.ReLU(inplace=True))
                in_channels = out_channels
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * 7 * 7, width), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(width, width), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(width, classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG11 = [(1, 64), (1, 128), (2, 256), (2, 512), (2, 512)]
VGG16 = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]


def narrow(arch, ratio=32):
    return [(n, c // ratio) for n, c in arch]


def spread_weights(model, gen, scale=1.0):
    """Uniform weights with a fan-in scale that keeps activations (and so logits) of order one."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.uniform_(-1, 1, generator=gen).mul_(scale * (6 / fan_in) ** 0.5)
                m.bias.uniform_(-0.1, 0.1, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)


def move_bn_stats(model, shape, gen):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(shape, generator=gen) * 2 - 0.5)
    model.eval()


def torch_to_vggts(gen):
    cases = [
        # name, model, input shape, flags the test passes to loadModel
        ("d2l_vgg11_r32", d2l_vgg(narrow(VGG11), 1, 64, 32, 10), (2, 1, 64, 64)),
        ("tv_vgg16_r32", TorchvisionVGG(narrow(VGG16), False, 32, 1000), (2, 3, 40, 48)),
        ("tv_vgg11_bn_r32", TorchvisionVGG(narrow(VGG11), True, 32, 10), (2, 3, 32, 32)),
    ]
    models = {}
    for name, model, shape in cases:
        spread_weights(model, gen)
        if name.startswith("tv_vgg16"):
            with torch.no_grad():  # spread 1000 logits far enough apart that a top-5 ranking is stable
                model.classifier[6].weight.mul_(40)
        if "bn" in name:
            move_bn_stats(model, shape, gen)
        model.eval()
        x = torch.rand(shape, generator=gen)
        with torch.no_grad():
            logits = model(x)
        save(model.state_dict(), {"format": "pt", "producer": "scripts/make_interop_fixtures.py"},
             os.path.join(OUT, f"{name}.safetensors"))
        save({"input": x, "logits": logits}, {"format": "pt"}, os.path.join(OUT, f"{name}.io.safetensors"))
        print(f"{name}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max():.3f}")
        models[name] = model
    return models


def predict_fixture(model, gen):
    """A smooth colour image plus noise, 288 wide and 256 tall, and PyTorch's top-5 for it."""
    h, w = 256, 288
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([
        0.5 + 0.4 * np.sin(xx / 23.0) * np.cos(yy / 31.0),
        0.5 + 0.4 * np.cos((xx + yy) / 19.0),
        yy / h,
    ], axis=-1)
    noise = torch.rand((h, w, 3), generator=gen).numpy() * 0.02
    pixels = np.clip((rgb + noise) * 255, 0, 255).astype(np.uint8)
    path = os.path.join(OUT, "photo.png")
    Image.fromarray(pixels, "RGB").save(path, optimize=True)
    # The evaluation transform: shorter side already 256 (no resize); centre crop 224; normalise.
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float().div(255).permute(2, 0, 1)
    top, left = round((h - 224) / 2), round((w - 224) / 2)
    x = x[:, top : top + 224, left : left + 224]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = ((x - mean) / std).unsqueeze(0)
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)[0]
    values, indices = probs.topk(6)
    gaps = (values[:-1] - values[1:]).min().item()
    assert gaps > 1e-4, f"top-6 probabilities too close to rank reliably ({gaps})"
    result = {"top5": indices[:5].tolist(), "probabilities": [round(v, 6) for v in values[:5].tolist()]}
    with open(os.path.join(OUT, "photo.top5.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"photo.png: top-5 {result}")


# vgg-ts writes these models; PyTorch reads them.
NODE_WRITER = """
import { manualSeed, Tensor, noGrad, rand, vgg, vggArchs, nn } from "./dist/src/index.js";
import { saveModel } from "./dist/src/train/checkpoint.js";
const [out] = process.argv.slice(1);
const cases = [
  ["vggts_d2l_r8", vgg(vggArchs.vgg11.slice(0, 3), { widthRatio: 8, inputSize: 32, classifierWidth: 24 }), [2, 1, 32, 32]],
  ["vggts_tv_vgg11_bn_r32", vgg(vggArchs.vgg11, { layout: "torchvision", inChannels: 3, numClasses: 7,
     widthRatio: 32, batchNorm: true, classifierWidth: 24 }), [2, 3, 36, 40]],
];
manualSeed(2024);
for (const [name, model, shape] of cases) {
  noGrad(() => {
    for (const m of model.modules())
      if (m instanceof nn.BatchNorm2d) { nn.init.uniform_(m.weight, 0.5, 1.5); nn.init.uniform_(m.bias, -0.2, 0.2); }
    model.train();
    for (let i = 0; i < 3; i++) {
      model.forward(new Tensor(rand(shape).data.map((v) => v * 2 - 0.5), shape));
    }
  });
  saveModel(`${out}/${name}.safetensors`, model);
  console.log(JSON.stringify({ name, shape }));
}
"""


def vggts_to_torch(gen):
    out = subprocess.run(["node", "--input-type=module", "-e", NODE_WRITER, OUT], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    for line in out.strip().splitlines():
        case = json.loads(line)
        name, shape = case["name"], tuple(case["shape"])
        tensors, metadata = load(os.path.join(OUT, f"{name}.safetensors"))
        cfg = json.loads(metadata["vgg-ts.config"])
        arch = [tuple(b) for b in cfg["convArch"]]
        if cfg["layout"] == "d2l":
            model = d2l_vgg(arch, cfg["inChannels"], cfg["inputSize"], cfg["classifierWidth"], cfg["numClasses"])
        else:
            model = TorchvisionVGG(arch, cfg["batchNorm"], cfg["classifierWidth"], cfg["numClasses"], cfg["inChannels"])
        model.load_state_dict(tensors, strict=True)
        model.eval()
        x = torch.rand(shape, generator=gen)
        with torch.no_grad():
            logits = model(x)
        save({"input": x, "logits": logits}, {"format": "pt"}, os.path.join(OUT, f"{name}.io.safetensors"))
        print(f"{name}: loaded strictly into PyTorch, logits {tuple(logits.shape)}")


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20240611)
    models = torch_to_vggts(gen)
    predict_fixture(models["tv_vgg16_r32"], gen)
    vggts_to_torch(gen)


if __name__ == "__main__":
    main()
