"""A pretrained torchvision classifier with a new head, fine-tuned in two phases.

    model = nt.models.vision("resnet18", n_outputs=pipe.n_outputs)

Phase 1 (`freeze_epochs`, default 1 with pretrained weights): the backbone is frozen (no gradients, its
batch norm statistics fixed) and only the new head learns, so the head's random start does not send
large gradients into the pretrained features. Phase 2: everything learns, the backbone at
`backbone_lr_scale` (default 0.1) of the head's lr. A backbone without pretrained weights has nothing
to protect: by default it is never frozen and learns at the full lr.

Weights, and what `model.weights_source` records:
- a file path: a state dict of the torchvision model (torch.save(model.state_dict(), path)), read with
  torch.load(weights_only=True); a head of another size in the file is skipped (a note says so);
- a torchvision weights name ("DEFAULT", "IMAGENET1K_V1") or enum, or pretrained=True with no weights:
  torchvision loads them from its cache (TORCH_HOME) or downloads them. When that fails (offline), the
  model starts from random weights, with a warning, and weights_source says so;
- pretrained=False and no weights: random initialisation.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nbtrain.errors import ConfigError, NbtrainWarning
from nbtrain.kinds.image.data import require_classifier

# Where torchvision classifiers keep their last linear layer; a Sequential there contributes its last module.
HEAD_PATHS = ("fc", "classifier", "heads.head", "head")
_EXAMPLES = 3
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def vision(name: str = "resnet18", pretrained: bool = True, weights=None, n_outputs: int | None = None,
           freeze_epochs="auto", backbone_lr_scale="auto") -> VisionModel:
    """A torchvision classification model (torchvision.models.get_model(name)) with its head replaced
    for `n_outputs` (None: keep the original head), and weights as the module docstring describes.

    `freeze_epochs`: epochs that train the head alone (0: never frozen); "auto": 1 with loaded weights,
    0 from random ones. `backbone_lr_scale`: the backbone's lr as a share of the head's; "auto": 0.1
    with loaded weights, 1 from random ones.
    """
    net = _build(name)
    head_path = _head_path(net, name)
    if n_outputs is not None:
        if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
            raise ConfigError(f"n_outputs must be a whole number >= 1 (pipe.n_outputs); received {n_outputs!r}.")
        old = _get(net, head_path)
        _set(net, head_path, nn.Linear(old.in_features, n_outputs, bias=old.bias is not None))
    source, notes = load_weights(net, name, head_path, pretrained, weights)
    loaded = not source.startswith("none")
    freeze = (1 if loaded else 0) if freeze_epochs == "auto" else freeze_epochs
    scale = (0.1 if loaded else 1.0) if backbone_lr_scale == "auto" else backbone_lr_scale
    if isinstance(freeze, bool) or not isinstance(freeze, int) or freeze < 0:
        raise ConfigError(f"freeze_epochs must be 'auto' or a whole number >= 0; received {freeze_epochs!r}.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
        raise ConfigError(f"backbone_lr_scale must be 'auto' or a number >= 0; received {backbone_lr_scale!r}.")
    return VisionModel(net, name=name, head_path=head_path, freeze_epochs=freeze, backbone_lr_scale=float(scale),
                       weights_source=source, notes=notes)


class VisionModel(nn.Module):
    """A torchvision classifier (`net`) whose head is the layer at `head_path`; called as model(images)."""

    def __init__(self, net: nn.Module, *, name: str, head_path: str, freeze_epochs: int = 1,
                 backbone_lr_scale: float = 0.1, weights_source: str = "", notes=()):
        super().__init__()
        self.net = net
        self.name, self.head_path = name, head_path
        self.freeze_epochs, self.backbone_lr_scale = freeze_epochs, backbone_lr_scale
        self.weights_source, self.notes = weights_source, list(notes)
        self.frozen = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @property
    def head_module(self) -> nn.Linear:
        return _get(self.net, self.head_path)

    @property
    def n_outputs(self) -> int:
        return self.head_module.out_features

    def is_head(self, param_name: str) -> bool:
        """Whether a parameter (named as in self.named_parameters()) belongs to the head."""
        return param_name.startswith(f"net.{self.head_path}.")

    @property
    def head(self) -> list:
        return [p for n, p in self.named_parameters() if self.is_head(n)]

    @property
    def backbone(self) -> list:
        return [p for n, p in self.named_parameters() if not self.is_head(n)]

    def lr_scale(self, param_name: str) -> float:
        """The lr multiplier nbtrain.training.optim gives this parameter: the head learns at the full lr."""
        return 1.0 if self.is_head(param_name) else self.backbone_lr_scale

    def freeze_backbone(self, frozen: bool = True) -> None:
        for param in self.backbone:
            param.requires_grad_(not frozen)
        self.frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> VisionModel:
        """As nn.Module.train; a frozen backbone's batch norm layers stay in eval mode, so its running
        statistics, learned on the pretraining data, are neither updated nor replaced by batch statistics."""
        super().train(mode)
        if self.frozen:
            for module_name, module in self.net.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not self.is_head(f"net.{module_name}."):
                    module.eval()
        return self

    @property
    def config(self) -> dict:
        """What rebuilds this model for a checkpoint's weights (no download: pretrained=False)."""
        return {"name": self.name, "n_outputs": self.n_outputs, "freeze_epochs": self.freeze_epochs,
                "backbone_lr_scale": self.backbone_lr_scale, "weights_source": self.weights_source,
                "pretrained": False}

    @classmethod
    def from_config(cls, config: dict) -> VisionModel:
        model = vision(config["name"], pretrained=False, n_outputs=config["n_outputs"],
                       freeze_epochs=config["freeze_epochs"], backbone_lr_scale=config["backbone_lr_scale"])
        model.weights_source = config.get("weights_source", model.weights_source)  # what the run started from
        return model

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, head={self.head_path!r} ({self.n_outputs} outputs), "
                f"freeze_epochs={self.freeze_epochs}, backbone_lr_scale={self.backbone_lr_scale:g}, "
                f"weights={self.weights_source!r}")


# ---- building ----------------------------------------------------------------------------------

def _build(name: str) -> nn.Module:
    from torchvision import models
    require_classifier(name)
    return models.get_model(name, weights=None)


def _get(net: nn.Module, path: str) -> nn.Module | None:
    module = net
    for part in path.split("."):
        module = getattr(module, part, None) if not part.isdigit() else module[int(part)]
        if module is None:
            return None
    return module


def _set(net: nn.Module, path: str, layer: nn.Module) -> None:
    parent, _, last = path.rpartition(".")
    owner = _get(net, parent) if parent else net
    if last.isdigit():
        owner[int(last)] = layer
    else:
        setattr(owner, last, layer)


def _head_path(net: nn.Module, name: str) -> str:
    for path in HEAD_PATHS:
        module = _get(net, path)
        if isinstance(module, nn.Sequential) and len(module):
            path, module = f"{path}.{len(module) - 1}", module[-1]
        if isinstance(module, nn.Linear):
            return path
    raise ConfigError(f"nt.models.vision does not know where the classifier head of {name!r} is: it replaces a last "
                      "nn.Linear at `fc` (ResNet, RegNet, GoogLeNet), `classifier[-1]` (EfficientNet, MobileNet, "
                      "ConvNeXt, VGG), `heads.head` (ViT) or `head` (Swin). Choose one of those families, or build "
                      "the model yourself and pass it to fit().")


# ---- weights -----------------------------------------------------------------------------------

def is_weights_file(weights) -> bool:
    """A path to a file (rather than a torchvision weights name such as "DEFAULT" or "IMAGENET1K_V1")."""
    if isinstance(weights, Path):
        return True
    return isinstance(weights, str) and ("/" in weights or "\\" in weights or weights.endswith(_FILE_SUFFIXES)
                                         or Path(weights).expanduser().is_file())


def load_weights(net: nn.Module, name: str, head_path: str, pretrained: bool, weights) -> tuple[str, list]:
    """Load the chosen weights into `net`; returns (weights_source, notes)."""
    if weights is None and not pretrained:
        return "none: random initialisation (pretrained=False)", []
    if isinstance(weights, Mapping):
        return "state dict given", load_state(net, weights, head_path, name, "the state dict given")
    if is_weights_file(weights):
        path = Path(weights).expanduser()
        return f"file {path}", load_state(net, read_weights_file(path), head_path, name, f"file {path}")
    chosen = torchvision_weights(name, "DEFAULT" if weights is None else weights)
    label = f"{type(chosen).__name__}.{chosen.name}"
    try:
        state = chosen.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # URLError is an OSError
        source = f"none: random initialisation (torchvision could not download or read {label}: {exc})"
        warnings.warn(f"{name}: the pretrained weights {label} are not available here ({exc}); the model starts "
                      "from random weights and will need far more data and epochs. On a machine with internet, "
                      "torchvision downloads them once into its cache (TORCH_HOME); or pass weights='<file>.pth'.",
                      NbtrainWarning, stacklevel=3)
        return source, [source]
    return f"torchvision {label}", load_state(net, state, head_path, name, f"torchvision's {label}")


def torchvision_weights(name: str, weights):
    """The torchvision weights enum member for "DEFAULT", a member name ("IMAGENET1K_V1"), a full name
    ("ResNet18_Weights.IMAGENET1K_V1") or the member itself."""
    from torchvision import models
    from torchvision.models import WeightsEnum
    enum = models.get_model_weights(name)
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ConfigError(f"weights={weights} are not weights of {name} ({enum.__name__}).")
        return weights
    member = str(weights).removeprefix(f"{enum.__name__}.")
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in enum.__members__:
        raise ConfigError(f"weights={weights!r} is neither a file nor weights of {name}; use 'DEFAULT', one of "
                          f"{[m.name for m in enum]}, a path to a state dict file, or None for random weights.")
    return enum[member]


def read_weights_file(path: Path) -> Mapping:
    if not path.is_file():
        raise ConfigError(f"weights={str(path)!r}: no such file. Pass the path of a state dict saved with "
                          "torch.save(model.state_dict(), path), a torchvision weights name, or None.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(f"weights file {str(path)!r} could not be read as a state dict ({exc}). Save weights with "
                          "torch.save(model.state_dict(), path).") from exc
    for key in ("model", "state_dict"):  # an nbtrain checkpoint, or a training script's {"state_dict": ...}
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state dict of tensors. "
                          "Save weights with torch.save(model.state_dict(), path).")
    return state


def load_state(net: nn.Module, state: Mapping, head_path: str, name: str, source: str) -> list:
    """Load a state dict into `net`; a head of another size is skipped. Returns notes on what was skipped."""
    state = {_strip(key): value for key, value in state.items()}
    own = net.state_dict()
    head = {k for k in own if k.startswith(head_path + ".")}
    skipped = sorted(k for k in head if k in state and state[k].shape != own[k].shape)
    unknown = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and k not in head and not k.endswith("num_batches_tracked")]
    misfit = [k for k in own if k in state and k not in head and state[k].shape != own[k].shape]
    if unknown or missing or misfit:
        problems = [f"{len(found)} {what} (e.g. {found[:_EXAMPLES]})" for found, what in
                    ((missing, "of its tensors are missing"), (unknown, "tensors are not in the model"),
                     (misfit, "have another shape"))
                    if found]
        raise ConfigError(f"The weights in {source} do not fit torchvision's {name}: {'; '.join(problems)}. Pass a "
                          f"state dict of torchvision.models.{name} (torch.save(model.state_dict(), path)), or the "
                          "model name it was saved from.")
    net.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if not skipped:
        return []
    given, wanted = state[skipped[0]].shape[0], own[skipped[0]].shape[0]
    return [f"The head in {source} has {given} outputs and this model {wanted}: it was skipped, and the new head "
            "starts from random weights."]


def _strip(key: str) -> str:
    """Keys as torchvision names them: without DataParallel's "module." or this class's "net." prefix."""
    for prefix in ("module.", "net."):
        key = key.removeprefix(prefix)
    return key
