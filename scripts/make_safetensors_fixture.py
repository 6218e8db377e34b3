#!/usr/bin/python3
"""Writes test/fixtures/safetensors/torch_mixed.safetensors and its expected values.

Run by hand with Debian's python3-torch:  /usr/bin/python3 scripts/make_safetensors_fixture.py
The `safetensors` Python package is not installed here, so the file is written with struct + json
following the format spec (as the reference writer does: sorted names, header space-padded to a
multiple of 8). The tensor bytes come from torch itself, so F16/BF16/I64 encodings are PyTorch's.
The expected values are torch's own conversion of each tensor to float32, stored as uint32 bit
patterns so NaN, infinities and -0 survive JSON exactly.
"""

import json
import os
import struct

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "safetensors")

DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
}


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the same 2 bytes as int16
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def save(tensors: dict, metadata: dict, path: str) -> None:
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        data = tensor_bytes(tensors[name])
        header[name] = {
            "dtype": DTYPE_NAMES[tensors[name].dtype],
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def float32_bits(t: torch.Tensor) -> list:
    return t.float().contiguous().view(torch.int32).flatten().tolist()


def main() -> None:
    torch.manual_seed(0)
    # A real module's state dict: BatchNorm brings the I64 num_batches_tracked scalar.
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    model.train()
    model(torch.randn(4, 1, 5, 5))  # moves running stats and num_batches_tracked away from defaults
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}

    specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-5, float("inf"), float("-inf"), float("nan")]
    tensors["extra.half"] = torch.tensor(specials, dtype=torch.float16).reshape(2, 5)
    tensors["extra.bf16"] = torch.tensor(specials + [3.0e38, -1.0e-38], dtype=torch.bfloat16).reshape(3, 4)
    tensors["extra.double"] = torch.tensor([[0.1, -1e300], [1e-300, 123456789.125]], dtype=torch.float64)
    tensors["extra.i32"] = torch.tensor([-(2**31), 2**31 - 1, 0], dtype=torch.int32)
    tensors["extra.u8"] = torch.tensor([[0, 1], [128, 255]], dtype=torch.uint8)
    tensors["extra.empty"] = torch.zeros(0, 3)
    metadata = {"format": "pt", "producer": "scripts/make_safetensors_fixture.py"}

    os.makedirs(OUT, exist_ok=True)
    save(tensors, metadata, os.path.join(OUT, "torch_mixed.safetensors"))
    expected = {
        "metadata": metadata,
        "tensors": {
            name: {
                "dtype": DTYPE_NAMES[t.dtype],
                "shape": list(t.shape),
                "float32_bits": float32_bits(t),
            }
            for name, t in sorted(tensors.items())
        },
    }
    with open(os.path.join(OUT, "torch_mixed.expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
