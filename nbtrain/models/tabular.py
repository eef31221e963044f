"""The default network for tables: an MLP over the float features, with an embedding per
high-cardinality label column (integer codes from preprocess, 0 = not seen in train)."""

from __future__ import annotations

import torch
from torch import nn

from nbtrain.errors import ConfigError


def embedding_width(cardinality: int) -> int:
    """fast.ai's rule of thumb: grows like n^0.56, capped at 64 (more rarely helps a table)."""
    return int(min(64, round(1.6 * cardinality ** 0.56)))


class MLP(nn.Module):
    """Linear -> norm -> activation -> dropout blocks, then one linear layer giving logits or values.

    `cardinalities` maps each embedding column (in the order of the codes' columns) to its number
    of codes, as `Pipeline.cardinalities` gives it. The output is raw: logits for classification
    (the loss applies the sigmoid/softmax), values for regression.
    """

    def __init__(self, n_inputs: int, n_outputs: int, hidden=(256, 128), dropout: float = 0.2,
                 cardinalities: dict | None = None, norm: str = "batch"):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1); received {dropout!r}.")
        if norm not in ("batch", "layer", "none"):
            raise ConfigError(f"norm must be 'batch', 'layer' or 'none'; received {norm!r}.")
        cardinalities = dict(cardinalities or {})
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_width(n)) for n in cardinalities.values())
        width = n_inputs + sum(e.embedding_dim for e in self.embeddings)
        if width == 0:
            raise ConfigError("MLP needs at least one input: n_inputs is 0 and there are no embedding columns.")
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), _norm(norm, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*[layer for layer in layers if not isinstance(layer, nn.Identity)])
        self.config = {"n_inputs": n_inputs, "n_outputs": n_outputs, "hidden": list(hidden),
                       "dropout": dropout, "cardinalities": cardinalities, "norm": norm}
        # He initialisation suits the hidden layers, which feed a ReLU. The output layer keeps torch's
        # default (uniform, +-1/sqrt(fan_in)): He there made the first outputs 2.5x larger, so a network
        # began far from the target's scale and lost accuracy on small tables (R^2 0.78 vs 0.83)
        for module in self.layers[:-1]:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        if self.embeddings:
            x = torch.cat([x, *(embed(codes[:, i]) for i, embed in enumerate(self.embeddings))], dim=1)
        return self.layers(x)


def _norm(kind: str, size: int) -> nn.Module:
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(kind, lambda _: nn.Identity())(size)
