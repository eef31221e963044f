"""ImagePipeline: image classification (or regression) with a pretrained torchvision model, fine-tuned.

    pipe = nt.Pipeline.from_folder("pets/")           # one subfolder per class
    pipe = nt.Pipeline(df, target="label")            # a column of image paths or arrays (kind inferred)
    pipe.clean(); pipe.split(); pipe.preprocess(model="resnet18")
    pipe.fit()                                        # nt.models.vision(...): a new head, then fine-tuning
    pipe.test()

What differs from tables: rows are identified by their image's content (sha256 of the file's bytes or
the array), so the test lock, duplicate detection and the "same rows across splits" warning follow
the pixels, not the file names. clean() decodes every image and drops the unreadable ones. Nothing is
fitted on the data but the class list: images are normalised with the model's own statistics
(nbtrain.kinds.image.data). Augmentation touches the train split only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from nbtrain.data import inputs
from nbtrain.data.clean import NA_MARKERS
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning, StageError
from nbtrain.kinds import detect
from nbtrain.kinds.image import data as images
from nbtrain.kinds.image.data import new_images
from nbtrain.kinds.image.models import is_weights_file, torchvision_weights, vision
from nbtrain.pipeline import Pipeline
from nbtrain.predictor import default_run, user_stacklevel
from nbtrain.training.callbacks import Callback
from nbtrain.training.evaluation import predict_rows
from nbtrain.training.interrupts import deferred_interrupts
from nbtrain.training.runs import choose_run, prediction_frame

_EXAMPLES = 5


def from_folder(path, **options) -> ImagePipeline:
    """An ImagePipeline over `path`/<class>/<image files> (nbtrain.kinds.image.data.list_folder): column
    `image` holds the paths, `label` the class folder names; rows are indexed by relative path."""
    return ImagePipeline(images.list_folder(path), "label", kind="image", image_col="image", **options)


class ImagePipeline(Pipeline):
    """A Pipeline whose feature is one column of images (paths or arrays); see the module docstring."""

    def __init__(self, data, target, *, kind="auto", image_col=None, ordinal=None, **options):
        images.require_vision()
        if kind not in ("auto", "image"):
            raise ConfigError(f"ImagePipeline is for kind='image'; received kind={kind!r}.")
        if ordinal:
            raise ConfigError("ordinal= declares ordered table columns; an image pipeline has none.")
        frame = inputs.require_frame(data)
        inputs.require_column(frame.columns, target, "target")
        others = [c for c in (target, options.get("time_col"), options.get("group_col")) if c is not None]
        self.image_col = _image_column(frame, image_col, others)
        super().__init__(frame, target, kind="image", **options)
        self._ignored = [c for c in self._features if c != self.image_col]
        self._features = [self.image_col]

    def _check_cells(self, frame: pd.DataFrame) -> None:
        inputs.check_cells_hashable(frame.drop(columns=[self.image_col]))  # pixel arrays are hashed by content

    def _hash_features(self) -> np.ndarray:
        # content hashes: the same image is the same row wherever its file lies (test lock, duplicates)
        return images.content_hashes(self._data[self.image_col])

    def clean(self) -> images.ImageCleaningReport:
        """Drop rows without a label, unreadable images (every file is decoded once: truncated, not an
        image, empty) and exact duplicates (same image, same label); report the same image under two labels."""
        required = tuple(c for c in (self.time_col, self.group_col) if c is not None)
        positions, report = images.clean_images(self._data, self.image_col, self.target, required,
                                                self._feature_hash, self._row_hash)
        for name in self._ignored:
            report.dropped_columns[name] = "not used: the model reads only the image column"
        self._frame = self._data.iloc[positions].drop(columns=self._ignored)
        self._clean_row_hash = self._row_hash[positions]
        self._clean_feature_hash = self._feature_hash[positions]
        self.cleaning_ = report
        self._na_markers = NA_MARKERS
        self._reset_to("cleaned")
        return report

    def preprocess(self, *, model: str = "resnet18", image_size="auto", weights="DEFAULT", flip: bool = True,
                   num_workers="auto", prefetch_factor: int = 2) -> images.ImagePreprocessReport:
        """Choose the model the images are prepared for, and how they are loaded.

        `model`: a torchvision classification model name; its pretrained weights' mean and std normalise
        the images (not statistics of your images: nothing here is fitted on data but the class list).
        `image_size`: the side of the square the model sees; "auto": the size the weights were trained at.
        `weights`: what the default model starts from: "DEFAULT" (torchvision's pretrained weights, from
        its cache or downloaded; offline, random weights with a warning), a weights name, a state dict
        file, or None (random). `flip`: random horizontal flips in training (False for text, digits...).
        `num_workers`: DataLoader worker processes ("auto": min(4, cores - 1); 0: decode in this process).
        """
        self._require_split("preprocess() prepares the splits and fixes the class list; it comes after split().")
        stats = images.model_statistics(model)
        size = stats["crop_size"] if image_size == "auto" else image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"image_size must be 'auto' or a whole number of pixels >= 1; received {image_size!r}.")
        _check_weights(model, weights)
        workers, prefetch = images.check_loading(num_workers, prefetch_factor)
        pre = images.ImagePreprocessor(
            image_col=self.image_col, target=self.target, task=self.task,
            classes=self.classes if self.task != "regression" else None, model=model, weights=weights,
            image_size=size, resize_size=max(size, round(size * stats["resize_size"] / stats["crop_size"])),
            mean=stats["mean"], std=stats["std"], statistics=stats["source"], flip=bool(flip),
            num_workers=workers, prefetch_factor=prefetch)
        self._train = pre.split_data(self._rows("train"), augment=True)
        self._val = pre.split_data(self._rows("val"))
        self.preprocessor_ = pre
        self._reset_to("preprocessed")
        return images.ImagePreprocessReport(train_rows=len(self._train), val_rows=len(self._val), model=model,
                                            weights=weights, image_size=size, classes=pre.classes,
                                            transforms=pre.describe())

    # ---- what the model sees ---------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        """Channels of the images the model reads (RGB)."""
        self._require("preprocessed", "n_inputs")
        return 3

    def _default_model(self):
        pre, n_outputs = self.preprocessor_, self.n_outputs
        return lambda: vision(pre.model, pretrained=pre.weights is not None, weights=pre.weights, n_outputs=n_outputs)

    def _fit_defaults(self) -> dict:
        # a small batch and patience: fine-tuning converges in a few epochs, each of which costs minutes
        return {"lr": 1e-3, "batch_size": 64, "patience": 3, "epochs": 10}

    def fit(self, model=None, **hyperparameters):
        """As Pipeline.fit; the default model is nt.models.vision(<preprocess model>, n_outputs=pipe.n_outputs).
        The run's notes say which weights it started from (nbtrain.training.fit.model_notes)."""
        self._check_statistics(model)
        callbacks = [c for c in hyperparameters.pop("callbacks", ()) if not isinstance(c, _ReleaseWorkers)]
        release = _ReleaseWorkers()
        try:
            run = super().fit(model, callbacks=[*callbacks, release], **hyperparameters)
        finally:  # after the doctor's last look at validation, which comes after the loop has ended
            with deferred_interrupts():  # an Interrupt now would leave worker processes behind
                release.release()
        return run

    def _check_statistics(self, model) -> None:
        name = getattr(model, "name", None)
        if model is None or name is None or getattr(self, "preprocessor_", None) is None:
            return
        if name != self.preprocessor_.model and images.model_statistics(name)["mean"] != self.preprocessor_.mean:
            warnings.warn(f"The images are normalised for {self.preprocessor_.model!r} but the model is {name!r}, "
                          f"whose pretrained weights expect other statistics. Call pipe.preprocess(model={name!r}).",
                          NbtrainWarning, stacklevel=user_stacklevel())

    def baseline(self, **options):
        self._require("split", "baseline")
        raise ConfigError("baseline() fits gradient-boosted trees on table columns; an image pipeline has none. "
                          "Compare runs against the majority class's share in the validation split, or against "
                          "the pretrained features alone: fit(nt.models.vision(..., freeze_epochs=<epochs>)).")

    # ---- using the model -------------------------------------------------------------------

    def predict(self, new_data, run=None, *, strict: bool = False) -> pd.DataFrame:
        """A run's predictions for new images: a folder, a path, a list of paths or arrays, an array, or a
        DataFrame with the image column; indexed like them (a folder: by relative path). Unreadable
        images are an error naming them; images of the test split are refused until test() has run."""
        runs = self._runs()
        if not runs and run is None:
            raise StageError(f"predict() comes after fit(); this pipeline is at stage {self._stage!r} and has no "
                             "trained run. Call pipe.fit() first.")
        chosen = default_run(self, runs) if run is None else choose_run(runs, run, self.task)
        rows = new_images(new_data, self.image_col)
        self._refuse_sealed(images.content_hashes(rows[self.image_col]), rows.index)
        predicted = predict_rows(chosen.model, self.preprocessor_, rows, self.task, chosen.config["target_scale"])
        return prediction_frame(predicted, rows.index, self.task, self.classes if self.task != "regression" else None,
                                chosen.config.get("decision"))

    def _refuse_sealed(self, hashes: np.ndarray, index: pd.Index) -> None:
        """Images of the test split not evaluated yet are refused: predicting on them is a look at the test set.
        An image that is also in train or validation is not sealed: it tells nothing new."""
        hit = np.isin(hashes, self._sealed_feature_hashes())
        if hit.any():
            raise LeakageError(f"{int(hit.sum())} of {len(hashes)} new images are images of this pipeline's test "
                               f"split (e.g. {index[hit][:_EXAMPLES].tolist()}), which stays sealed until pipe.test(). "
                               "A prediction on them is a look at the test set by another door. Call pipe.test() "
                               "first (once, for the final estimate), or drop those images.")

    def save(self, path, run=None):
        """Write a run of nt.models.vision as one bundle file: the architecture and its weights, the class
        names and the eval transform's parameters (nbtrain.kinds.image.bundle has the format)."""
        from nbtrain.kinds.image.bundle import image_predictor
        return image_predictor(self, run, verb="save", evidence=True).save(path)

    def export(self, path, format: str = "onnx", run=None, *, rtol: float = 1e-4, atol: float = 1e-5):
        """Write a run of nt.models.vision for serving (images after the eval transform, dynamic batch), checked on
        the validation images (nbtrain.kinds.image.bundle, nbtrain.export)."""
        from nbtrain.kinds.image.bundle import image_predictor
        return image_predictor(self, run, verb="export").export(path, format, sample=self._rows("val"), rtol=rtol,
                                                                atol=atol)

    def __repr__(self) -> str:
        rows = len(getattr(self, "_frame", self._data))
        return (f"ImagePipeline(target={self.target!r}, image_col={self.image_col!r}, task={self.task!r}, "
                f"rows={rows}, stage={self._stage!r})")


class _ReleaseWorkers(Callback):
    """Remembers a run's splits, so that their DataLoader workers (which persist across the run's epochs)
    can be ended when fit() returns."""

    loop = None

    def attach(self, loop) -> None:
        self.loop = loop

    def release(self) -> None:
        for split in (self.loop.train, self.loop.val) if self.loop is not None else ():
            close = getattr(split, "close", None)
            if close is not None:
                close()


def _image_column(frame: pd.DataFrame, image_col, others: list):
    """The column holding the images: as named, or the one column that holds paths or arrays."""
    if image_col is not None:
        inputs.require_column(frame.columns, image_col, "image_col")
        if image_col in others:
            raise ConfigError(f"image_col={image_col!r} is also the target, time or group column.")
        return image_col
    found = [c for c in frame.columns if c not in others and detect.is_image_column(frame[c])]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"No column holds image paths ({', '.join(detect.IMAGE_SUFFIXES)}) or pixel arrays "
                        f"(H, W[, C]); columns: {list(frame.columns)}. Name it with image_col=..., or use "
                        "nt.Pipeline.from_folder(path) for a folder of class subfolders.")
    raise ConfigError(f"Several columns hold images: {found}. Name the one to learn from with image_col=....")


def _check_weights(model: str, weights) -> None:
    """Fail now, not at fit(), on a weights file that does not exist or a weights name the model lacks."""
    if weights is None:
        return
    if is_weights_file(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights={str(weights)!r}: no such file. Pass the path of a state dict saved with "
                              "torch.save(model.state_dict(), path), 'DEFAULT', or None for random weights.")
        return
    if not isinstance(weights, dict):
        torchvision_weights(model, weights)
