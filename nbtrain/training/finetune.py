"""Fine-tuning a pretrained network in two phases (nbtrain.kinds.image.models says why).

fit() attaches BackbonePhases to any model with `freeze_epochs` and `freeze_backbone(frozen)`.
"""

from __future__ import annotations

import torch
from torch import nn

from nbtrain.training.callbacks import Callback


def has_phases(model: nn.Module) -> bool:
    return hasattr(model, "freeze_backbone") and hasattr(model, "freeze_epochs")


class BackbonePhases(Callback):
    """Freezes the backbone at the start of fit, unfreezes it after `freeze_epochs` epochs, and leaves
    the model whole at the end. On a GPU it also moves the model to channels_last (the images are)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def on_fit_start(self, state) -> None:
        if next(self.model.parameters()).device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        if state.epoch < self.model.freeze_epochs:
            self.model.freeze_backbone(True)

    def on_epoch_end(self, state) -> None:
        if self.model.frozen and state.epoch >= self.model.freeze_epochs:
            self.model.freeze_backbone(False)

    def on_fit_end(self, state) -> None:
        self.model.freeze_backbone(False)
