"""Bundles of image models: `pipe.save(path)` on an ImagePipeline, read back by `nbtrain.load(path)`.

The same file and promises as a table's bundle (nbtrain.bundle), with what an image model needs:

    manifest.json   as for tables, with "kind": "image"; "model": nt.models.vision's config (the
                    torchvision architecture's name, outputs, and what its weights started from);
                    "image": the image column, the class names, and the eval transform's parameters
                    (resize, centre crop, the mean and std it normalises with, and where they come from)
    weights.pt      the best weights: a state_dict, read with torch's weights-only loader
    sealed.npy      content hashes of the test images still sealed when it was saved (uint64)

The network is rebuilt from torchvision's architecture (no download: pretrained=False) and given the
saved weights. Only nbtrain's VisionModel is bundled: a model class of your own keeps its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nbtrain.bundle import read_sealed, read_weights, sealed_bytes, weights_bytes
from nbtrain.errors import ConfigError, DataError
from nbtrain.kinds.image import data as images
from nbtrain.kinds.image.data import new_images
from nbtrain.predictor import Predictor, kind_predictor, pick_run

_MODEL = ("nbtrain.kinds.image.models", "VisionModel")
_OLD_MODULES = ("nbtrain.models.vision",)  # where bundles saved before the move name the class
_MEMBERS = {"sealed.npy", "weights.pt"}
# The ImagePreprocessor's fields a bundle keeps: what the eval transform and the targets need.
_FIELDS = {"image_col": (str, int), "task": str, "model": str, "image_size": int, "resize_size": int,
           "mean": list, "std": list, "statistics": str, "flip": bool}


@dataclass(repr=False)
class ImagePredictor(Predictor):
    """A fine-tuned image model with its class names and eval transform: `predict(images)`."""

    kind = "image"
    image_col: object = None

    def predict(self, new_data, *, strict: bool = False) -> pd.DataFrame:
        """Predictions for new images (a folder, a path, a list of paths or arrays, an array, or a DataFrame
        with the image column), indexed like them, as the pipeline's predict() gives them."""
        from nbtrain.training.runs import prediction_frame
        rows = new_images(new_data, self.image_col)
        self._refuse_sealed(rows)
        return prediction_frame(self._outputs(rows), rows.index, self.task, self.classes, self.run.get("decision"))

    def transform(self, new_data):
        raise ConfigError("transform() makes the inputs of a tabular network; an image model reads images through "
                          "model.preprocessor.eval_transform.")

    def export(self, path, format: str = "onnx", *, sample=None, rtol: float = 1e-4, atol: float = 1e-5):
        """Write the network and its head for serving (input: images after the eval transform, float32 (batch, 3,
        size, size), dynamic batch), checked against this model on `sample` images (anything predict takes;
        default random images) (nbtrain.export)."""
        from nbtrain.export import export_model
        return export_model(self, path, format, sample=sample, rtol=rtol, atol=atol)

    def export_inputs(self, sample=None):
        """The exported graph's input and the images its check runs on (nbtrain.export.ExportInputs)."""
        from nbtrain.export import ExportInputs
        pre = self.preprocessor
        if sample is not None:
            found = new_images(sample, self.image_col)[self.image_col].to_numpy(dtype=object)[:_EXPORT_IMAGES]
        else:  # random pixels: what matters is that the graph computes what the network does
            rng = np.random.default_rng(0)
            found = [rng.integers(0, 256, size=(pre.resize_size, pre.resize_size, 3), dtype=np.uint8)
                     for _ in range(_EXPORT_IMAGES // 4)]
        dataset = images.ImageDataset(_objects(list(found)), pre.eval_transform)
        batch = torch.stack([dataset[i][0] for i in range(len(dataset))]).numpy().astype(np.float32)
        return ExportInputs(
            names=["images"], arrays=(batch,), dynamic=({0: "batch"},),
            described=[f"images float32 (batch, 3, {pre.image_size}, {pre.image_size}): Resize({pre.resize_size}) + "
                       f"CenterCrop({pre.image_size}), scaled to [0, 1], normalised with mean {list(pre.mean)} and "
                       f"std {list(pre.std)}"],
            sample="validation images" if sample is not None else "random images",
            metadata={"run": self.run.get("name"), "task": self.task, "classes": self.classes, "target": self.target,
                      "transform": pre.describe()[1], "mean": list(pre.mean), "std": list(pre.std)})

    def _bundle_manifest(self) -> dict:
        return _manifest(self)

    def _bundle_members(self) -> dict[str, bytes]:
        return _members(self)

    def _row_keys(self, rows: pd.DataFrame) -> np.ndarray:
        return images.content_hashes(rows[self.image_col])  # an image is known by its pixels (ImagePipeline)

    def _reads(self) -> str:
        pre = self.preprocessor
        return (f"Reads images from {self.image_col!r}: Resize({pre.resize_size}) + CenterCrop({pre.image_size}), "
                f"normalised with {pre.statistics}.")

    def _input_sections(self):
        return []


_EXPORT_IMAGES = 64   # a check sample of this many images is enough, and stays small at 224 pixels


def _objects(values: list) -> np.ndarray:
    """An object array of arrays (np.asarray would stack them into one array)."""
    found = np.empty(len(values), dtype=object)
    found[:] = values
    return found


def image_predictor(pipe, run=None, *, verb: str = "save", evidence: bool = False) -> ImagePredictor:
    """The ImagePredictor of one of an ImagePipeline's runs of nt.models.vision (default as for predict)."""
    chosen = pick_run(pipe, run, verb=verb)
    if (type(chosen.model).__module__, type(chosen.model).__qualname__) != _MODEL:
        raise ConfigError(f"{verb}() handles nbtrain's vision models (nt.models.vision); run "
                          f"{chosen.name!r} is a {type(chosen.model).__name__}. Keep its checkpoint (run.checkpoint) "
                          "and predict with pipe.predict(...) in this session.")
    return kind_predictor(ImagePredictor, pipe, chosen, evidence=evidence, image_col=pipe.image_col)


def _manifest(predictor: ImagePredictor) -> dict:
    pre = predictor.preprocessor
    fields = {name: getattr(pre, name) for name in _FIELDS}
    fields.update(mean=[float(v) for v in pre.mean], std=[float(v) for v in pre.std])
    info = {k: v for k, v in predictor.info.items() if k not in ("source", "path")}
    return {"kind": "image", "task": predictor.task, "target": predictor.target, "classes": predictor.classes,
            "target_scale": list(predictor.target_scale), "run": predictor.run,
            "model": {"module": _MODEL[0], "qualname": _MODEL[1], "config": dict(predictor.model.config)},
            "schema": {"image_col": predictor.image_col}, "image": fields, "info": info,
            "evidence": predictor.evidence}


def _members(predictor: ImagePredictor) -> dict[str, bytes]:
    return {"sealed.npy": sealed_bytes(predictor.sealed), "weights.pt": weights_bytes(predictor.model)}


# ---- loading ------------------------------------------------------------------------------------


def load_bundle(manifest: dict, members: dict[str, bytes], path: Path, *, trust: bool = False) -> ImagePredictor:
    """The ImagePredictor of a checked bundle (nbtrain.bundle.load has read and checksummed its members)."""
    if set(members) != _MEMBERS:
        raise DataError(f"{str(path)!r}: an image bundle holds {sorted(_MEMBERS)}; its manifest lists "
                        f"{sorted(members)[:5]}. The file was damaged or crafted; save the bundle again.")
    fields = _image_fields(manifest, path)
    model = _rebuild(manifest["model"], members["weights.pt"], path)
    pre = images.ImagePreprocessor(target=manifest["target"], classes=manifest["classes"], weights=None,
                                   num_workers=0, **fields)
    return ImagePredictor(task=manifest["task"], target=manifest["target"], classes=manifest["classes"],
                          target_scale=tuple(manifest["target_scale"]), run=manifest["run"], model=model,
                          preprocessor=pre, sealed=read_sealed(members["sealed.npy"], path),
                          image_col=fields["image_col"], evidence=manifest.get("evidence"),
                          info={**manifest["info"], "source": "bundle", "path": str(path)})


def _image_fields(manifest: dict, path: Path) -> dict:
    fields = manifest.get("image")
    wrong = [name for name, kind in _FIELDS.items()
             if not isinstance(fields, dict) or not isinstance(fields.get(name), kind)
             or (kind is int and isinstance(fields.get(name), bool))]
    if not wrong and (fields["image_size"] < 1 or fields["resize_size"] < 1 or len(fields["mean"]) != 3
                      or len(fields["std"]) != 3 or not all(isinstance(v, (int, float)) for v in
                                                            fields["mean"] + fields["std"])):
        wrong = ["image_size, resize_size, mean or std"]
    if wrong:
        raise DataError(f"{str(path)!r}: its manifest is malformed: 'image' should hold {sorted(_FIELDS)} (found a "
                        f"wrong or missing {wrong[0]!r}). The file was damaged or crafted; save the bundle again.")
    return {name: fields[name] for name in _FIELDS}


def _rebuild(spec: dict, weights: bytes, path: Path):
    """nt.models.vision's architecture (no download) with the saved weights, in eval mode."""
    from nbtrain.kinds.image.models import VisionModel
    if spec.get("qualname") != _MODEL[1] or spec.get("module") not in (_MODEL[0], *_OLD_MODULES):
        raise DataError(f"{str(path)!r}: an image bundle holds nbtrain's VisionModel; its manifest names "
                        f"{spec.get('module')}.{spec.get('qualname')}. The file was crafted; save it again.")
    state = read_weights(weights, path)
    try:
        model = VisionModel.from_config(spec.get("config") or {})
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{str(path)!r}: the vision model cannot be built from the bundle's config "
                        f"{spec.get('config')!r} ({exc!r}). Save the bundle again from the pipeline.") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{str(path)!r}: the saved weights do not fit {spec['config'].get('name')!r} as torchvision "
                        f"builds it here ({str(exc).splitlines()[0]}). Install the torchvision version the bundle "
                        "was made with, or save it again.") from exc
    return model.eval()
