#!/usr/bin/env python3
"""Writes test/fixtures/torch/*.json: PyTorch reference values for vgg-ts's core ops and VGG models.

Run by hand with Debian's torch:  /usr/bin/python3 scripts/make_torch_fixtures.py
Every case holds its inputs (float32 values drawn from a seeded generator), an upstream gradient, the
forward output and the gradient of every input, computed with torch.autograd in float64 from those float32
inputs, so the reference carries no float32 rounding of its own. Numbers are written with 9 significant
digits, enough to round-trip a float32 exactly. A tensor is {"shape": [...], "data": [flat, row-major]}.
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 20240611
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "torch")
gen = torch.Generator().manual_seed(SEED)


def rand(*shape, lo=-1.0, hi=1.0):
    """float32 uniform values in [lo, hi), returned as float64 for the reference computation."""
    t = torch.rand(tuple(shape), generator=gen, dtype=torch.float32) * (hi - lo) + lo
    return t.double()


def randn(*shape, std=1.0):
    return (torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * std).double()


def num(v):
    return float(f"{v:.9g}")


def tensor(t):
    t = t.detach().double().contiguous()
    return {"shape": list(t.shape), "data": [num(v) for v in t.reshape(-1).tolist()]}


def grad_case(name, op, options, inputs, forward):
    """Runs forward(**inputs) in float64, backpropagates a random upstream gradient, records everything."""
    leaves = {k: (v.clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    y = forward(**leaves)
    dy = rand(*y.shape)
    wrt = [k for k, v in leaves.items() if v is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in wrt], dy)
    return {
        "name": name,
        "op": op,
        "options": options,
        "inputs": {k: (tensor(v) if v is not None else None) for k, v in inputs.items()},
        "grad_output": tensor(dy),
        "output": tensor(y),
        "grads": {k: tensor(g) for k, g in zip(wrt, grads)},
    }


def conv2d_cases():
    # (name, N, C_in, H, W, C_out, kH, kW, stride, padding, bias, relu)
    specs = [
        ("1->3 k3 s1 p0 bias", 1, 1, 5, 5, 3, 3, 3, 1, 0, True, False),
        ("3->5 k3 s2 p1 bias non-square batch 2", 2, 3, 7, 6, 5, 3, 3, 2, 1, True, False),
        ("3->5 k3 s1 p2 no bias batch 2", 2, 3, 6, 9, 5, 3, 3, 1, 2, False, False),
        ("3->5 k3 s1 p1 bias (VGG's conv)", 2, 3, 8, 8, 5, 3, 3, 1, 1, True, False),
        ("2->4 k1 s1 p0 bias (1x1)", 2, 2, 4, 5, 4, 1, 1, 1, 0, True, False),
        ("3->3 k5 s2 p2 bias odd size", 1, 3, 9, 7, 3, 5, 5, 2, 2, True, False),
        ("2->3 k3x2 stride (1, 2) padding (1, 0) no bias", 2, 2, 6, 7, 3, 3, 2, [1, 2], [1, 0], False, False),
        ("3->4 k3 s1 p1 bias fused relu", 2, 3, 5, 6, 4, 3, 3, 1, 1, True, True),
    ]
    cases = []
    for name, n, cin, h, w, cout, kh, kw, stride, padding, bias, relu in specs:
        inputs = {
            "x": rand(n, cin, h, w),
            "weight": rand(cout, cin, kh, kw, lo=-0.5, hi=0.5),
            "bias": rand(cout, lo=-0.5, hi=0.5) if bias else None,
        }

        def forward(x, weight, bias, stride=stride, padding=padding, relu=relu):
            y = F.conv2d(x, weight, bias, stride=stride, padding=padding)
            return F.relu(y) if relu else y

        options = {"stride": stride, "padding": padding, "relu": relu}
        cases.append(grad_case(name, "conv2d", options, inputs, forward))
    return cases


def max_pool2d_cases():
    # (name, N, C, H, W, kernel, stride, padding)
    specs = [
        ("k2 s2 6x6", 2, 2, 6, 6, 2, 2, 0),
        ("k2 s2 odd 7x5", 1, 3, 7, 5, 2, 2, 0),
        ("k3 s2 p1 7x7", 2, 2, 7, 7, 3, 2, 1),
        ("k3 s2 p1 8x9", 1, 2, 8, 9, 3, 2, 1),
        ("k3 s1 p1 5x6", 2, 1, 5, 6, 3, 1, 1),
        ("k3 s1 p1 odd 3x7", 1, 2, 3, 7, 3, 1, 1),
    ]
    cases = []
    for name, n, c, h, w, k, s, p in specs:
        options = {"kernelSize": k, "stride": s, "padding": p}
        cases.append(
            grad_case(
                name,
                "max_pool2d",
                options,
                {"x": rand(n, c, h, w)},
                lambda x, k=k, s=s, p=p: F.max_pool2d(x, k, s, p),
            )
        )
    return cases


def linear_cases():
    specs = [
        ("4x6 -> 3 bias", 4, 6, 3, True),
        ("1x5 -> 7 bias", 1, 5, 7, True),
        ("3x8 -> 2 no bias", 3, 8, 2, False),
    ]
    cases = []
    for name, n, fin, fout, bias in specs:
        inputs = {"x": rand(n, fin), "weight": rand(fout, fin), "bias": rand(fout) if bias else None}
        cases.append(grad_case(name, "linear", {}, inputs, F.linear))
    return cases


def batch_norm_cases():
    # (name, N, C, H, W, training, momentum, affine)
    specs = [
        ("training 2x3x4x5", 2, 3, 4, 5, True, 0.1, True),
        ("training 4x2x3x3 momentum 0.3", 4, 2, 3, 3, True, 0.3, True),
        ("training 3x4x2x2 no affine", 3, 4, 2, 2, True, 0.1, False),
        ("eval 2x3x4x5", 2, 3, 4, 5, False, 0.1, True),
    ]
    cases = []
    for name, n, c, h, w, training, momentum, affine in specs:
        # Shifted and scaled so the batch statistics are far from 0 and 1.
        x = rand(n, c, h, w) * 2.0 + 0.5
        running_mean = rand(c, lo=-0.5, hi=0.5)
        running_var = rand(c, lo=0.5, hi=2.0)
        inputs = {
            "x": x,
            "weight": rand(c, lo=0.5, hi=1.5) if affine else None,
            "bias": rand(c, lo=-0.5, hi=0.5) if affine else None,
        }
        new_mean, new_var = running_mean.clone(), running_var.clone()

        def forward(x, weight, bias, training=training, momentum=momentum, m=new_mean, v=new_var):
            return F.batch_norm(x, m, v, weight, bias, training=training, momentum=momentum, eps=1e-5)

        options = {"training": training, "momentum": momentum, "eps": 1e-5}
        case = grad_case(name, "batch_norm", options, inputs, forward)
        case["running_mean"] = tensor(running_mean)
        case["running_var"] = tensor(running_var)
        case["updated_running_mean"] = tensor(new_mean)
        case["updated_running_var"] = tensor(new_var)
        cases.append(case)
    return cases


def loss_cases():
    cases = []
    for name, n, c in [("4x10", 4, 10), ("3x5 large logits", 3, 5), ("1x3", 1, 3)]:
        scale = 30.0 if "large" in name else 3.0
        logits = rand(n, c, lo=-scale, hi=scale)
        targets = torch.randint(0, c, (n,), generator=gen)
        for op, forward in [
            ("cross_entropy", lambda x, t=targets: F.cross_entropy(x, t)),
            ("log_softmax+nll_loss", lambda x, t=targets: F.nll_loss(F.log_softmax(x, dim=1), t)),
            ("log_softmax", lambda x: F.log_softmax(x, dim=1)),
        ]:
            case = grad_case(f"{op} {name}", op, {}, {"x": logits}, forward)
            case["targets"] = targets.tolist()
            cases.append(case)
    return cases


def adaptive_avg_pool2d_cases():
    specs = [
        ("9x9 -> 7x7", 2, 2, 9, 9, [7, 7]),
        ("10x13 -> 7x7", 1, 3, 10, 13, [7, 7]),
        ("5x6 -> 1x1", 2, 3, 5, 6, [1, 1]),
        ("2x3 -> 7x7 (upsampling)", 1, 2, 2, 3, [7, 7]),
        ("8x8 -> 3x5", 1, 2, 8, 8, [3, 5]),
    ]
    return [
        grad_case(
            name,
            "adaptive_avg_pool2d",
            {"outputSize": out},
            {"x": rand(n, c, h, w)},
            lambda x, out=out: F.adaptive_avg_pool2d(x, out),
        )
        for name, n, c, h, w, out in specs
    ]


# ---- Whole models: PyTorch's own structures, built as d2l and torchvision build them ----


def conv_layers(num_convs, in_channels, out_channels, batch_norm):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


def classifier(in_features, width, num_classes, dropout):
    return [
        nn.Linear(in_features, width),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(width, num_classes),
    ]


def d2l_vgg(conv_arch, in_channels, input_size, width, num_classes):
    """d2l's vgg(conv_arch): one Sequential of blocks, Flatten and the classifier (keys 0.0.weight ...)."""
    blocks = []
    size = input_size
    for num_convs, out_channels in conv_arch:
        blocks.append(nn.Sequential(*conv_layers(num_convs, in_channels, out_channels, False)))
        in_channels = out_channels
        size //= 2
    head = classifier(in_channels * size * size, width, num_classes, 0.0)
    return nn.Sequential(*blocks, nn.Flatten(), *head)


class TorchvisionVGG(nn.Module):
    """torchvision's VGG layout (features / avgpool / classifier), written out since torchvision is absent."""

    def __init__(self, conv_arch, in_channels, batch_norm, width, num_classes):
        super().__init__()
        layers = []
        for num_convs, out_channels in conv_arch:
            layers += conv_layers(num_convs, in_channels, out_channels, batch_norm)
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(*classifier(in_channels * 49, width, num_classes, 0.0))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def randomize(model):
    """Replaces every parameter and buffer with seeded float32 values of a sensible scale."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(rand(*p.shape, lo=-0.1, hi=0.1))
            elif p.dim() == 1:  # batch norm weight
                p.copy_(rand(*p.shape, lo=0.5, hi=1.5))
            else:
                fan_in = p[0].numel()
                p.copy_(randn(*p.shape, std=(2.0 / fan_in) ** 0.5))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(rand(*b.shape, lo=-0.2, hi=0.2))
            elif name.endswith("running_var"):
                b.copy_(rand(*b.shape, lo=0.5, hi=1.5))
            elif name.endswith("num_batches_tracked"):
                b.fill_(3)


def model_case(name, layout, config, model, x, targets, training):
    """Logits, mean cross-entropy and every parameter's gradient; for training mode, the updated buffers
    and the logits in evaluation mode afterwards."""
    randomize(model)
    model = model.double()
    state = {k: tensor(v) for k, v in model.state_dict().items()}
    model.train(training)
    logits = model(x)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    case = {
        "name": name,
        "layout": layout,
        "config": config,
        "training": training,
        "state_dict": state,
        "input": tensor(x),
        "targets": targets.tolist(),
        "logits": tensor(logits),
        "loss": num(loss.item()),
        "grads": {k: tensor(p.grad) for k, p in model.named_parameters()},
    }
    if training:
        # The step's buffer updates, then evaluation mode, which normalises with those updated statistics.
        buffers = model.state_dict().items()
        case["updated_buffers"] = {k: tensor(v) for k, v in buffers if "running" in k or "num_batches" in k}
        model.eval()
        with torch.no_grad():
            case["eval_logits"] = tensor(model(x))
    return case


def model_cases():
    cases = []
    arch = [[1, 4], [1, 8]]
    config = {"convArch": arch, "inChannels": 1, "numClasses": 10, "inputSize": 32, "classifierWidth": 8}
    config.update({"dropout": 0, "batchNorm": False, "layout": "d2l"})
    model = d2l_vgg(arch, 1, 32, 8, 10)
    x, t = rand(2, 1, 32, 32, lo=0.0, hi=1.0), torch.randint(0, 10, (2,), generator=gen)
    cases.append(model_case("d2l conv_arch ((1,4),(1,8)), 32x32, eval", "d2l", config, model, x, t, False))

    # vgg11's configuration A with every width divided by 64 (1, 2, 4, 8, 8) to keep the fixture small; the
    # inputs are not 224x224, so the adaptive 7x7 average pool upsamples the trunk's small output.
    vgg11 = [[1, 64], [1, 128], [2, 256], [2, 512], [2, 512]]
    # (width ratio, batch norm, input channels, input height x width, training mode)
    specs = [(64, False, 3, (32, 48), False), (64, True, 1, (48, 40), True)]
    for ratio, batch_norm, in_channels, hw, training in specs:
        arch = [[n, c // ratio] for n, c in vgg11]
        config = {"convArch": vgg11, "widthRatio": ratio, "inChannels": in_channels, "numClasses": 10}
        config.update({"classifierWidth": 8, "dropout": 0, "batchNorm": batch_norm, "layout": "torchvision"})
        model = TorchvisionVGG(arch, in_channels, batch_norm, 8, 10)
        batch = 2 if training else 1
        x, t = rand(batch, in_channels, *hw, lo=0.0, hi=1.0), torch.randint(0, 10, (batch,), generator=gen)
        mode = "train" if training else "eval"
        name = f"torchvision vgg11{'_bn' if batch_norm else ''} / {ratio}, {hw[0]}x{hw[1]}, {mode}"
        cases.append(model_case(name, "torchvision", config, model, x, t, training))
    return cases


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    files = {
        "conv2d": conv2d_cases,
        "max_pool2d": max_pool2d_cases,
        "linear": linear_cases,
        "batch_norm": batch_norm_cases,
        "losses": loss_cases,
        "adaptive_avg_pool2d": adaptive_avg_pool2d_cases,
        "vgg": model_cases,
    }
    total = 0
    for name, make in files.items():
        doc = {"generator": "scripts/make_torch_fixtures.py", "torch": torch.__version__, "cases": make()}
        path = os.path.join(OUT_DIR, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {len(doc['cases'])} cases, {size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
