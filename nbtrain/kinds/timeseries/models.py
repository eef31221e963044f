"""Forecasters over windows of past steps: input (batch, lookback, n_features), output (batch, horizon).

Both predict every horizon step at once from the state after the last input step (a direct
multi-step forecast: no step feeds its own prediction back, so errors do not compound). Each keeps a
JSON-able `config`, from which fit rebuilds it when resuming a checkpoint.

`relative=True` (default): feature 0 is the target itself (where nbtrain's windows put it). The
network sees it relative to the window's last value, and the forecast is a learned multiple of that
last value (initially 1: the last-value forecast) plus the network's change. A trending series keeps
reaching levels the train period never had; changes it has seen. Pass relative=False for data whose
feature 0 is not the target.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nbtrain.errors import ConfigError


def _whole(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}; received {value!r}.")
    return value


def _share(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1); received {value!r}.")
    return float(value)


class LSTMForecaster(nn.Module):
    """A stacked LSTM; a linear head reads the last step's hidden state and outputs `horizon` values."""

    def __init__(self, n_features: int, horizon: int = 1, hidden: int = 64, layers: int = 2, dropout: float = 0.1,
                 relative: bool = True):
        super().__init__()
        self.config = {"n_features": _whole(n_features, "n_features"), "horizon": _whole(horizon, "horizon"),
                       "hidden": _whole(hidden, "hidden"), "layers": _whole(layers, "layers"),
                       "dropout": _share(dropout, "dropout"), "relative": bool(relative)}
        # torch applies LSTM dropout between layers only; with one layer it would only warn
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, horizon)
        self.level = _level(horizon) if relative else None

    @classmethod
    def from_config(cls, config: dict) -> LSTMForecaster:
        return cls(**config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, last = relative_to_last(x) if self.level is not None else (x, None)
        out, _ = self.lstm(x)
        change = self.head(out[:, -1])
        return change if last is None else change + self.level(last)


class TransformerForecaster(nn.Module):
    """A Transformer encoder over the window (sinusoidal positions, pre-norm layers); a linear head
    reads the last position's state, which attends to every earlier step, and outputs `horizon` values."""

    def __init__(self, n_features: int, horizon: int = 1, d_model: int = 64, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1, relative: bool = True):
        super().__init__()
        self.config = {"n_features": _whole(n_features, "n_features"), "horizon": _whole(horizon, "horizon"),
                       "d_model": _whole(d_model, "d_model", 2), "heads": _whole(heads, "heads"),
                       "layers": _whole(layers, "layers"), "dropout": _share(dropout, "dropout"),
                       "relative": bool(relative)}
        if d_model % heads or d_model % 2:
            raise ConfigError(f"d_model must be even and divisible by heads; received d_model={d_model}, "
                              f"heads={heads}. Try d_model={heads * max(2, math.ceil(d_model / heads / 2) * 2)}.")
        self.embed = nn.Linear(n_features, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=dropout,
                                           batch_first=True, norm_first=True)
        # nested tensors only speed up padded batches; windows have none, and norm_first would warn
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, horizon)
        self.level = _level(horizon) if relative else None

    @classmethod
    def from_config(cls, config: dict) -> TransformerForecaster:
        return cls(**config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, last = relative_to_last(x) if self.level is not None else (x, None)
        h = self.embed(x) + positions(x.shape[1], self.config["d_model"], x.device, self.embed.weight.dtype)
        change = self.head(self.norm(self.encoder(h)[:, -1]))
        return change if last is None else change + self.level(last)


def relative_to_last(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0 (the target) minus its value at the window's last step; and that value, (batch, 1)."""
    last = x[:, -1, :1]
    return torch.cat([x[..., :1] - last[:, None], x[..., 1:]], dim=-1), last


def _level(horizon: int) -> nn.Linear:
    """The last value's share in each forecast step, starting at 1 (the last-value forecast). Its scale
    and offset also absorb the small difference between the input scaler and fit's target scaling."""
    layer = nn.Linear(1, horizon)
    nn.init.ones_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def positions(length: int, width: int, device, dtype) -> torch.Tensor:
    """Sinusoidal position codes (Vaswani et al. 2017): any window length, nothing to learn."""
    step = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    codes = torch.zeros(length, width, device=device)
    codes[:, 0::2], codes[:, 1::2] = torch.sin(step * rate), torch.cos(step * rate)
    return codes.to(dtype)
