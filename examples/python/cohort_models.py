"""PyTorch twins of Cohort's model zoo.

`build_model(config)` builds, from the same `model_config` JSON that Cohort trains (for
example `OUT/model.json` of a finished job), an `nn.Module` whose state_dict keys and shapes
equal those of Cohort's LibTorch model (`layers.<index>.weight|bias`), so a trained
`OUT/model.pt` loads with `model.load_state_dict(torch.load(path))`.

Models take images as float in [0, 1], shape N x 1 x 28 x 28; normalization happens inside
the model (a `normalize` layer), exactly as in Cohort.
"""

import json

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std with constants, no parameters or buffers (as in Cohort)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x):
        return (x - self.mean) / self.std


class FloatIndexEmbedding(nn.Module):
    """nn.Embedding over float inputs cast to int64 indices (as in Cohort). The weight sits on
    this module itself, so its state_dict key is `layers.<i>.weight`."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))

    def forward(self, x):
        return nn.functional.embedding(x.long(), self.weight)


class CohortNet(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _output_shape(shape, layer):
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, *shape)).shape[1:])


def build_model(config) -> nn.Module:
    """Builds the model described by a Cohort `model_config` (a dict or a JSON file path)."""
    if isinstance(config, str):
        with open(config) as f:
            config = json.load(f)
    shape = tuple(config["input_shape"])
    layers = []
    for spec in config["layers"]:
        kind = spec["type"]
        if kind == "normalize":
            layer = Normalize(spec["mean"], spec["std"])
        elif kind == "conv2d":
            layer = nn.Conv2d(shape[0], spec["out_channels"], spec["kernel_size"],
                              stride=spec.get("stride", 1), padding=spec.get("padding", 0),
                              bias=spec.get("bias", True))
        elif kind == "max_pool2d":
            layer = nn.MaxPool2d(spec["kernel_size"], stride=spec.get("stride", spec["kernel_size"]))
        elif kind == "avg_pool2d":
            layer = nn.AvgPool2d(spec["kernel_size"], stride=spec.get("stride", spec["kernel_size"]))
        elif kind == "flatten":
            layer = nn.Flatten()
        elif kind == "linear":
            layer = nn.Linear(shape[0], spec["out_features"], bias=spec.get("bias", True))
        elif kind == "layer_norm":
            layer = nn.LayerNorm(shape[-1])
        elif kind == "embedding":
            layer = FloatIndexEmbedding(spec["num_embeddings"], spec["embedding_dim"])
        elif kind == "dropout":
            layer = nn.Dropout(spec.get("p", 0.5))
        elif kind == "relu":
            layer = nn.ReLU()
        elif kind == "tanh":
            layer = nn.Tanh()
        elif kind == "sigmoid":
            layer = nn.Sigmoid()
        elif kind == "gelu":
            layer = nn.GELU()
        else:
            raise ValueError(f"model_config: unknown layer type {kind!r}")
        shape = _output_shape(shape, layer)
        layers.append(layer)
    return CohortNet(layers)
