#!/usr/bin/python3
"""Independent evaluation of a Cohort model on the Fashion-MNIST test set.

Reads the gzip'd IDX files itself (no Cohort code), builds the model from OUT/model.json with
cohort_models.py, loads OUT/model.pt with torch.load(weights_only=True), and prints accuracy.

    /usr/bin/python3 examples/python/evaluate.py runs/latest
"""

import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cohort_models import build_model  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="a Cohort output directory holding model.pt and model.json")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    images = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))

    with open(os.path.join(args.out, "model.json")) as f:
        model = build_model(json.load(f))
    state = torch.load(os.path.join(args.out, "model.pt"), weights_only=True)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(1) == y).float().mean().item()
    result = {"test_samples": len(y), "test_loss": loss, "test_accuracy": accuracy,
              "parameters": sum(p.numel() for p in model.parameters())}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.out}: accuracy {100 * accuracy:.2f}% on {len(y)} test images "
              f"(loss {loss:.4f}, {result['parameters']} parameters)")


if __name__ == "__main__":
    main()
