"""PyTorch twins of Cohort's model zoo.

`build_model(config)` builds, from the same `model_config` JSON that Cohort trains (for
example `OUT/model.json` of a finished job), an `nn.Module` whose state_dict keys and shapes
equal those of Cohort's LibTorch model (`layers.<index>.weight|bias`), so a trained
`OUT/model.pt` loads with `model.load_state_dict(torch.load(path))`.

Models take images as float in [0, 1], shape N x 1 x 28 x 28; normalization happens inside
the model (a `normalize` layer), exactly as in Cohort.

A `model_config` without "layers" (num_layers, hidden_size, num_attention_heads,
vocab_size, ...) builds `CohortTransformer`, with the same state_dict keys as Cohort's
(`token_embedding.weight`, `blocks.0.attention.query.weight`, ...); text is encoded with
`ByteTokenizer`.

With `"lora": {"rank": r, "alpha": a, "targets": [...]}` in the `model_config`, the
targeted projections carry adapters (`blocks.0.attention.query.lora_A`, `.lora_B`; with
"token_embedding" also the tied embedding, `token_embedding.lora_A`, `.lora_B`) and
every other weight is frozen, as in Cohort. A LoRA job's `OUT/model.pt` holds the adapters:
load the base model first, then the adapters (`load_state_dict(base)` and
`load_state_dict(adapters, strict=False)`); `OUT/model_merged.pt` is the base with the
adapters merged in, which the same config without "lora" loads as is.
"""

import json
import math

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


class ByteTokenizer:
    """Cohort's byte-level tokenizer ("tokenizer": "bytes"): bytes are ids 0..255, BOS 256
    starts and EOS 257 ends a document, PAD 258 is reserved (training/text_data.h)."""

    BOS, EOS, PAD, VOCAB_SIZE = 256, 257, 258, 259

    def encode(self, text: str, document: bool = True):
        ids = list(text.encode("utf-8"))
        return [self.BOS] + ids + [self.EOS] if document else ids

    def decode(self, ids) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


def _attach_adapter(module: nn.Module, a_columns: int, b_rows: int, rank: int, alpha: float) -> None:
    """lora_A [rank, a_columns] (Kaiming-uniform, as nn.Linear's weight) and lora_B
    [b_rows, rank] (zeros: a fresh adapter leaves the base model's output unchanged)."""
    module.lora_A = nn.Parameter(torch.empty(rank, a_columns))
    module.lora_B = nn.Parameter(torch.zeros(b_rows, rank))
    nn.init.kaiming_uniform_(module.lora_A, a=math.sqrt(5))
    module.scaling = alpha / rank


class LoRALinear(nn.Linear):
    """nn.Linear plus a low-rank adapter: W x + b + (alpha / rank) * B (A x)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__(in_features, out_features)
        _attach_adapter(self, in_features, out_features, rank, alpha)

    def forward(self, x):
        return super().forward(x) + self.scaling * (x @ self.lora_A.t()) @ self.lora_B.t()


class LoRAEmbedding(nn.Embedding):
    """The tied token embedding plus a low-rank adapter: W + (alpha / rank) * B A, with
    A [rank, hidden] and B [vocab, rank] (zeros), used in factored form for the lookup
    here and for the output logits (CohortTransformer.forward)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, alpha: float):
        super().__init__(num_embeddings, embedding_dim)
        _attach_adapter(self, embedding_dim, num_embeddings, rank, alpha)

    def forward(self, ids):
        return super().forward(ids) + self.scaling * nn.functional.embedding(ids, self.lora_B) @ self.lora_A

    def logits(self, x):
        return x @ self.weight.t() + self.scaling * (x @ self.lora_A.t()) @ self.lora_B.t()


LORA_TARGETS = ("token_embedding", "query", "key", "value", "output", "mlp_in", "mlp_out")


def _add_adapters(model: nn.Module, lora) -> None:
    """Replaces each targeted projection of every block with a LoRALinear holding the same
    weights, and freezes all but the adapters (and an encoder's classifier, and with
    "train_norms" the LayerNorms)."""
    rank = lora["rank"]
    alpha = lora.get("alpha", rank)
    if "token_embedding" in lora["targets"]:
        old = model.token_embedding
        new = LoRAEmbedding(old.num_embeddings, old.embedding_dim, rank, alpha)
        with torch.no_grad():
            new.weight.copy_(old.weight)
        model.token_embedding = new
    for block in model.blocks:
        for name in lora["targets"]:
            if name == "token_embedding":
                continue
            owner = block.attention if name in ("query", "key", "value", "output") else block
            old = getattr(owner, name)
            new = LoRALinear(old.in_features, old.out_features, rank, alpha)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.copy_(old.bias)
            setattr(owner, name, new)
    norms = lora.get("train_norms", False)
    for key, parameter in model.named_parameters():
        parameter.requires_grad_(key.endswith((".lora_A", ".lora_B")) or key.startswith("classifier.")
                                 or (norms and "_norm." in key))


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value/output projections."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, causal: bool):
        b, t, h = x.shape
        d = h // self.num_heads

        def heads(y):
            return y.view(b, t, self.num_heads, d).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if causal:
            later = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(later, float("-inf"))
        weights = nn.functional.dropout(scores.softmax(-1), self.dropout, self.training)
        return self.output((weights @ v).transpose(1, 2).reshape(b, t, h))


class TransformerBlock(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + mlp(norm(x)) with GELU."""

    def __init__(self, hidden_size, num_heads, intermediate_size, dropout):
        super().__init__()
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = SelfAttention(hidden_size, num_heads, dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp_in = nn.Linear(hidden_size, intermediate_size)
        self.mlp_out = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x, causal: bool):
        drop = nn.functional.dropout
        x = x + drop(self.attention(self.attention_norm(x), causal), self.dropout, self.training)
        return x + drop(self.mlp_out(nn.functional.gelu(self.mlp_in(self.mlp_norm(x)))), self.dropout, self.training)


class CohortTransformer(nn.Module):
    """The transformer of a `model_config` without "layers" (training/transformer_spec.h):
    a causal LM with tied input/output embeddings ("architecture": "decoder", the default),
    or a sequence classifier ("encoder", pooled by "mean" or "first" token). Input: token
    ids [B, T] (int or float); output: [B, T, vocab_size] or [B, num_classes]."""

    def __init__(self, config):
        super().__init__()
        hidden = config["hidden_size"]
        self.causal = config.get("architecture", "decoder") == "decoder"
        self.dropout = config.get("dropout", 0.1)
        self.pooling = config.get("pooling", "mean")
        self.token_embedding = nn.Embedding(config["vocab_size"], hidden)
        self.position_embedding = nn.Embedding(config.get("max_position_embeddings", 512), hidden)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        intermediate = config.get("intermediate_size", min(4 * hidden, 1 << 18))
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden, config["num_attention_heads"], intermediate, self.dropout)
            for _ in range(config["num_layers"]))
        self.final_norm = nn.LayerNorm(hidden)
        if not self.causal:
            self.classifier = nn.Linear(hidden, config["num_classes"])
        if "lora" in config:
            _add_adapters(self, config["lora"])

    def forward(self, tokens):
        ids = tokens.long()
        t = ids.shape[1]
        x = self.token_embedding(ids) + self.position_embedding.weight[:t]
        x = nn.functional.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x, self.causal)
        x = self.final_norm(x)
        if self.causal:
            if isinstance(self.token_embedding, LoRAEmbedding):
                return self.token_embedding.logits(x)
            return x @ self.token_embedding.weight.t()
        pooled = x[:, 0] if self.pooling == "first" else x.mean(1)
        return self.classifier(pooled)


def build_model(config) -> nn.Module:
    """Builds the model described by a Cohort `model_config` (a dict or a JSON file path)."""
    if isinstance(config, str):
        with open(config) as f:
            config = json.load(f)
    if "layers" not in config:
        return CohortTransformer(config)
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
