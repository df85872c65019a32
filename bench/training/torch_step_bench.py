#!/usr/bin/env python3
"""PyTorch's Python training step for the model cohort_data_parallel_bench times in C++:
the same model config (configs/models/NAME.json), batch size, optimizer (SGD, momentum 0.9)
and precision, on random Fashion-MNIST-shaped data. Prints one line in the bench's format.
  python3 bench/training/torch_step_bench.py --device cuda --precision bf16 --steps 40 --batch 256
"""
import argparse
import json
import os
import time

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def build(config):
    layers, shape = [], list(config["input_shape"])
    for layer in config["layers"]:
        t = layer["type"]
        if t == "normalize":
            layers.append(Normalize(layer["mean"], layer["std"]))
        elif t == "conv2d":
            k, s, p = layer["kernel_size"], layer.get("stride", 1), layer.get("padding", 0)
            out = layer["out_channels"]
            layers.append(nn.Conv2d(shape[0], out, k, s, p, bias=layer.get("bias", True)))
            shape = [out, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        elif t == "max_pool2d":
            k = layer["kernel_size"]
            s = layer.get("stride", k)
            layers.append(nn.MaxPool2d(k, s))
            shape = [shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1]
        elif t == "flatten":
            layers.append(nn.Flatten())
            n = 1
            for d in shape:
                n *= d
            shape = [n]
        elif t == "linear":
            layers.append(nn.Linear(shape[0], layer["out_features"], bias=layer.get("bias", True)))
            shape = [layer["out_features"]]
        elif t == "relu":
            layers.append(nn.ReLU())
        elif t == "dropout":
            layers.append(nn.Dropout(layer.get("p", 0.5)))
        else:
            raise SystemExit(f"torch_step_bench: layer type {t} is not handled here")
    return nn.Sequential(*layers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="niid_cnn")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "configs", "models", a.model + ".json")) as f:
        config = json.load(f)
    device = torch.device(a.device)
    model = build(config).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(a.batch * a.steps, *config["input_shape"]).pin_memory() if device.type == "cuda" else \
        torch.rand(a.batch * a.steps, *config["input_shape"])
    y = torch.randint(0, config["num_classes"], (a.batch * a.steps,))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = torch.cuda.amp.GradScaler(enabled=a.precision == "fp16")

    def epoch():
        for i in range(a.steps):
            xb = x[i * a.batch:(i + 1) * a.batch].to(device, non_blocking=True)
            yb = y[i * a.batch:(i + 1) * a.batch].to(device, non_blocking=True)
            opt.zero_grad()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = nn.functional.cross_entropy(model(xb).float(), yb)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss.item()  # the C++ trainer reads each step's loss too

    epoch()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"python model={a.model} device={a.device} precision={a.precision} workers=1 batch={a.batch} "
          f"steps={a.steps} seconds={seconds:.3f} samples_per_s={a.batch * a.steps / seconds:.1f}")


if __name__ == "__main__":
    main()
