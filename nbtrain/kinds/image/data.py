"""Image input: a folder of class subfolders, or a DataFrame whose column holds image paths or pixel
arrays; checking, content hashing, transforms, and the split data object the training loop reads.

What is learned from the data: nothing but the class list (from the labels). Pixels are normalised
with the pretrained model's own mean and std (for torchvision's classification weights, ImageNet's),
never with statistics of these images, so validation and test images cannot leak into preprocessing.
Augmentation (RandomResizedCrop, RandomHorizontalFlip) applies to the train split only; validation,
test and prediction always get the deterministic eval transform (Resize, CenterCrop).

Images are decoded by DataLoader workers into uint8 tensors of one size; the cast to float and the
normalisation run on the training device (the GPU when there is one), where they cost nothing and
the host sends a quarter of the bytes. Arrays may be (H, W) or (H, W, C) with C in 1, 3, 4: integers
in 0..255, or floats in [0, 1] (torchvision's convention), stored as 8 bits like a decoded file.
"""

from __future__ import annotations

import hashlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nbtrain.data.batches import EvaluationBatch
from nbtrain.data.clean import CleaningReport, first_occurrences, rows_with_target, rows_phrase
from nbtrain.errors import ConfigError, DataError
from nbtrain.report import Report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.6, 1.0)         # RandomResizedCrop keeps at least 60% of the image: the object stays in view
EVAL_BATCH = 256                # images per evaluation batch, whatever the loop asks for (memory, not speed)
_EXAMPLES = 5
_IO_THREADS = 8                 # file reads and decodes release the GIL: threads overlap the disk waits


def require_vision() -> None:
    """torchvision and Pillow are the optional `vision` extra: say how to get them, up front."""
    import importlib.util
    missing = [name for name, module in (("torchvision", "torchvision"), ("pillow", "PIL"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"Images need {' and '.join(missing)}, not installed here: pip install "
                          "'nbtrain[vision]' (torch and torchvision must be a matching pair).")


# ---- where images come from -------------------------------------------------------------------

def list_folder(path) -> pd.DataFrame:
    """One row per image file under `path`/<class>/ (subfolders of a class included): columns
    `image` (absolute path) and `label` (the class folder's name), indexed by the path relative to
    `path`, so reports and predictions name files as the user sees them."""
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file, not a folder"
        raise DataError(f"from_folder needs a folder with one subfolder of images per class; {str(path)!r} {what}.")
    subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {d.name: image_files(d) for d in subfolders}
    classes = {name: found for name, found in files.items() if found}
    loose = image_files(root, recursive=False)
    if not subfolders:
        hint = (f" It holds {len(loose)} images directly: move them into one subfolder per class "
                "(e.g. cats/, dogs/)." if loose else f" It holds no images ({', '.join(IMAGE_SUFFIXES)}) either.")
        raise DataError(f"Folder {str(root)!r} has no class subfolders.{hint}")
    if not classes:
        raise DataError(f"The class subfolders of {str(root)!r} ({[d.name for d in subfolders][:_EXAMPLES]}) hold no "
                        f"image files (suffixes {', '.join(IMAGE_SUFFIXES)}); check the path and the file types.")
    if len(classes) < 2:
        empty = [n for n in files if n not in classes]
        also = f" (subfolders without images: {empty[:_EXAMPLES]})" if empty else ""
        raise DataError(f"Folder {str(root)!r} has images for one class only, {next(iter(classes))!r}{also}; a "
                        "classifier needs at least two. Put each class's images in its own subfolder.")
    rows = [(str(f.resolve()), label, f.relative_to(root).as_posix())
            for label, found in classes.items() for f in found]
    paths, labels, names = zip(*rows)
    return pd.DataFrame({"image": list(paths), "label": list(labels)}, index=pd.Index(list(names), name="file"))


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files (by suffix, hidden ones skipped) under `folder`, sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def as_image_frame(data, image_col) -> pd.DataFrame:
    """New images for prediction as a frame with `image_col`: a DataFrame holding that column, a folder
    (every image under it), one path, a list of paths or arrays, one array (H, W[, C]) or a stack (N, H, W, C)."""
    if isinstance(data, pd.DataFrame):
        if image_col not in data.columns:
            raise DataError(f"The new rows need the image column {image_col!r}; their columns are "
                            f"{list(data.columns)}.")
        return data
    if isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
        files = image_files(Path(data))
        if not files:
            raise DataError(f"Folder {str(data)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
        return pd.DataFrame({image_col: [str(f) for f in files]},
                            index=pd.Index([f.relative_to(Path(data)).as_posix() for f in files], name="file"))
    if isinstance(data, np.ndarray):
        single = data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (1, 3, 4))
        values = [data] if single else list(data) if data.ndim in (3, 4) else None
        if values is None:
            raise DataError(f"An array of images must be (H, W), (H, W, C) or a stack (N, H, W[, C]); received shape "
                            f"{data.shape}.")
    elif isinstance(data, (str, os.PathLike)):
        values = [str(data)]
    elif isinstance(data, (list, tuple, pd.Series)):
        values = [str(v) if isinstance(v, os.PathLike) else v for v in data]
    else:
        raise DataError(f"predict() takes images as a folder, a path, a list of paths or arrays, an array, or a "
                        f"DataFrame with the column {image_col!r}; received a {type(data).__name__}.")
    frame = pd.DataFrame({image_col: pd.Series(values, dtype=object)})
    return frame.set_axis(data.index) if isinstance(data, pd.Series) else frame


# ---- reading, checking, hashing ----------------------------------------------------------------

def read_image(value) -> torch.Tensor:
    """An image as a uint8 tensor (3, H, W): a file through PIL (grayscale, palette and alpha images
    converted to RGB), or an array (see the module docstring). Raises what the file or array is wrong with."""
    if isinstance(value, np.ndarray):
        return _from_array(value)
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor
    with Image.open(value) as image:
        return pil_to_tensor(image.convert("RGB"))


def _from_array(array: np.ndarray) -> torch.Tensor:
    problem = array_problem(array)
    if problem:
        raise DataError(problem)
    if array.dtype.kind == "f":
        array = np.rint(array * 255)
    pixels = torch.from_numpy(np.ascontiguousarray(array).astype(np.uint8, copy=False))
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return pixels[:3].expand(3, -1, -1).contiguous() if len(pixels) in (1, 4) else pixels.contiguous()


def array_problem(array: np.ndarray) -> str | None:
    """What keeps an array from being an image, or None."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)) or 0 in array.shape:
        return f"an array of shape {array.shape}: an image is (H, W) or (H, W, C) with 1, 3 or 4 channels"
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            return (f"float pixels outside [0, 1] (range {np.nanmin(array):.3g} to {np.nanmax(array):.3g}): divide "
                    "0..255 values by 255, or pass them as uint8")
        return None
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            return f"integer pixels outside 0..255 (range {array.min()} to {array.max()})"
        return None
    return f"an array of dtype {array.dtype}: pixels must be integers in 0..255 or floats in [0, 1]"


def image_problem(value) -> tuple[str | None, tuple]:
    """(what is wrong with this image or None, its (height, width)): files are fully decoded, since a
    truncated file opens fine and fails only when its pixels are read."""
    if isinstance(value, np.ndarray):
        problem = array_problem(value)
        return problem, (() if problem else value.shape[:2])
    if not isinstance(value, (str, os.PathLike)):
        return ("missing" if _is_missing(value) else f"not a path or an array ({type(value).__name__})"), ()
    path = Path(value)
    if not path.is_file():
        return ("file not found" if not path.exists() else "not a file"), ()
    if path.stat().st_size == 0:
        return "empty file (0 bytes)", ()
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            return None, (image.height, image.width)
    except UnidentifiedImageError:
        return "not an image (PIL cannot identify it)", ()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL's ways of saying corrupt
        return f"truncated or corrupt ({exc})", ()


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def content_hashes(column: pd.Series) -> np.ndarray:
    """One uint64 per image from the sha256 of its content (the file's bytes; an array's dtype, shape and
    bytes), so the same image hashes equal wherever it lies and whatever its row: duplicates and the test
    lock follow the pixels, not the path. A file that cannot be read hashes by its path."""
    with ThreadPoolExecutor(_IO_THREADS) as pool:
        return np.fromiter(pool.map(_content_hash, column.tolist()), dtype=np.uint64, count=len(column))


def _content_hash(value) -> int:
    digest = hashlib.sha256()
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (str, os.PathLike)):
        try:
            digest.update(Path(value).read_bytes())
        except OSError:
            digest.update(f"unreadable:{value}".encode())
    else:
        digest.update(f"{type(value).__name__}:{value!r}".encode())
    return int.from_bytes(digest.digest()[:8], "little")


# ---- cleaning ----------------------------------------------------------------------------------

@dataclass(repr=False)
class ImageCleaningReport(CleaningReport):
    """The result of `ImagePipeline.clean()`: the CleaningReport fields, plus what was wrong with images."""

    title = "Cleaning report (images)"
    image_col: object = None
    unreadable: int = 0
    unreadable_examples: list = field(default_factory=list)     # (row label, what is wrong)
    conflicting: int = 0                                        # rows whose image appears with another label
    conflicting_examples: list = field(default_factory=list)    # (row label, its label, other row, other label)
    sizes: dict = field(default_factory=dict)                   # readable images: min/median/max height, width

    def _summary(self) -> list[str]:
        lines = super()._summary()
        if self.unreadable:
            shown = "; ".join(f"{row!r}: {why}" for row, why in self.unreadable_examples)
            lines.append(f"Dropped {rows_phrase(self.unreadable)} whose image cannot be read, e.g. {shown}.")
        if self.sizes:
            s = self.sizes
            lines.append(f"Images (height x width): {s['min'][0]}x{s['min'][1]} to {s['max'][0]}x{s['max'][1]}, "
                         f"median {s['median'][0]}x{s['median'][1]}.")
        return lines


def clean_images(frame: pd.DataFrame, image_col, target, required: tuple, feature_hash: np.ndarray,
                 row_hash: np.ndarray) -> tuple[np.ndarray, ImageCleaningReport]:
    """(positions of the rows kept, report): rows without a target or a required value, unreadable
    images, and exact duplicates (same image, same label) are dropped; the same image under two labels
    is kept and reported, since which label is right is the user's call."""
    report = ImageCleaningReport(rows_in=len(frame), image_col=image_col)
    keep = rows_with_target(frame, target, report)
    for name in required:
        lacking = keep & frame[name].isna().to_numpy()
        if lacking.any():
            report.rows_dropped_for_missing[name] = int(lacking.sum())
            keep &= ~lacking
    candidates = np.flatnonzero(keep)
    with ThreadPoolExecutor(_IO_THREADS) as pool:
        checked = list(pool.map(image_problem, frame[image_col].iloc[candidates].tolist()))
    bad = np.array([problem is not None for problem, _ in checked], dtype=bool)
    report.unreadable = int(bad.sum())
    report.unreadable_examples = [(frame.index[p], checked[i][0])
                                  for i, p in enumerate(candidates) if bad[i]][:_EXAMPLES]
    if report.unreadable:
        report.corrupt[image_col] = [f"{rows_phrase(report.unreadable)} unreadable, dropped"]
    keep[candidates[bad]] = False
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise DataError(f"Cleaning left no rows out of {report.rows_in}: {' '.join(report._summary()[1:])} "
                        "Check the image column and the target.")
    report.sizes = _sizes([size for (problem, size) in checked if problem is None])
    first = first_occurrences(frame.iloc[kept], row_hash[kept], report)
    kept = kept[first]
    _conflicts(frame, target, feature_hash, kept, report)
    report.rows_out = len(kept)
    return kept, report


def _sizes(sizes: list) -> dict:
    if not sizes:
        return {}
    heights, widths = np.array(sizes).T
    return {"min": (int(heights.min()), int(widths.min())), "median": (int(np.median(heights)), int(np.median(widths))),
            "max": (int(heights.max()), int(widths.max()))}


def _conflicts(frame: pd.DataFrame, target, feature_hash: np.ndarray, kept: np.ndarray,
               report: ImageCleaningReport) -> None:
    hashes = pd.Series(feature_hash[kept])
    labels = frame[target].iloc[kept].reset_index(drop=True)
    spread = labels.groupby(hashes.to_numpy()).transform("nunique")
    clash = np.flatnonzero(spread.to_numpy() > 1)
    if not len(clash):
        return
    report.conflicting = len(clash)
    first = {}
    for i in clash:
        first.setdefault(hashes[i], i)
    report.conflicting_examples = [(frame.index[kept[i]], labels[i], frame.index[kept[first[hashes[i]]]],
                                    labels[first[hashes[i]]]) for i in clash if first[hashes[i]] != i][:_EXAMPLES]
    shown = "; ".join(f"{r!r} ({a!r}) = {o!r} ({b!r})" for r, a, o, b in report.conflicting_examples)
    report.warnings.append(f"{report.conflicting} rows show an image that also appears under another label, e.g. "
                           f"{shown}. Both were kept: fix the labels or drop the wrong copies. If the copies land "
                           "in different splits, split() warns again.")


# ---- normalisation and transforms --------------------------------------------------------------

def require_classifier(name: str, label: str = "") -> None:
    """ConfigError unless torchvision has a classification model of this name, with close names;
    `label` prefixes the name as the caller received it ("model=")."""
    from torchvision import models
    classifiers = models.list_models(module=models)
    if name not in classifiers:
        import difflib
        close = difflib.get_close_matches(str(name), classifiers, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"{label}{name!r} is not a torchvision classification model.{hint} E.g. 'resnet18', "
                          "'resnet50', 'efficientnet_b0', 'mobilenet_v3_small', 'convnext_tiny', 'vit_b_16'.")


def model_statistics(name: str) -> dict:
    """mean, std, crop and resize sizes of the model's pretrained weights (torchvision's meta: no
    download), and where they come from. A torchvision model without weights gets ImageNet's."""
    from torchvision import models
    require_classifier(name, "model=")
    weights = models.get_model_weights(name).DEFAULT
    preset = weights.transforms()
    mean, std = getattr(preset, "mean", IMAGENET_MEAN), getattr(preset, "std", IMAGENET_STD)
    crop, resize = getattr(preset, "crop_size", [224]), getattr(preset, "resize_size", [256])
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std), "crop_size": int(crop[0]),
            "resize_size": int(resize[0]), "source": f"{weights} (the pretrained weights' own statistics)"}


def geometric_transform(image_size: int, resize_size: int, augment: bool, flip: bool = True):
    """Train (augment): a random crop of 60-100% of the image, resized, and a random horizontal flip.
    Eval: resize the short side, then crop the centre. Both end as uint8 (3, size, size)."""
    from torchvision.transforms import v2
    if augment:
        steps = [v2.RandomResizedCrop(image_size, scale=CROP_SCALE, antialias=True)]
        return v2.Compose(steps + ([v2.RandomHorizontalFlip()] if flip else []))
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size)])


def normalisation(mean, std):
    """uint8 -> float32 in [0, 1] -> standardised with the model's mean and std; works on a batch."""
    from torchvision.transforms import v2
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


@dataclass
class ImagePreprocessor:
    """How images become model inputs; fitted on the train split only in the sense that it holds the
    class list. Everything else comes from the model (mean, std, sizes), not from the data."""

    image_col: object
    target: object
    task: str
    classes: list | None
    model: str
    weights: object
    image_size: int
    resize_size: int
    mean: tuple
    std: tuple
    statistics: str                 # where mean and std come from
    flip: bool = True
    num_workers: int = 0
    prefetch_factor: int = 2
    eval_batch: int = EVAL_BATCH

    def transform(self, augment: bool):
        """The whole transform (decoded uint8 image -> normalised float tensor), as torchvision composes it."""
        from torchvision.transforms import v2
        return v2.Compose([*geometric_transform(self.image_size, self.resize_size, augment, self.flip).transforms,
                           *normalisation(self.mean, self.std).transforms])

    @property
    def train_transform(self):
        return self.transform(augment=True)

    @property
    def eval_transform(self):
        return self.transform(augment=False)

    def split_data(self, rows: pd.DataFrame, *, augment: bool = False) -> ImageSplit:
        """Model inputs for these rows: augmented only when asked (the train split), else the eval transform."""
        return ImageSplit(images=rows[self.image_col].to_numpy(dtype=object), y=self._targets(rows),
                          index=rows.index, preprocessor=self, augment=augment)

    def _targets(self, rows: pd.DataFrame) -> np.ndarray:
        if self.target not in rows.columns:  # new images to predict carry no label
            return np.zeros(len(rows), dtype=np.float32 if self.task == "regression" else np.int64)
        if self.task == "regression":
            return rows[self.target].to_numpy(dtype=np.float32)
        return pd.Categorical(rows[self.target], categories=self.classes).codes.astype(np.int64)

    def describe(self) -> list[str]:
        train = ["RandomResizedCrop(%d, scale=%s)" % (self.image_size, CROP_SCALE)]
        train += ["RandomHorizontalFlip()"] if self.flip else []
        tail = ["ToDtype(float32, scale=True)", f"Normalize(mean={_rounded(self.mean)}, std={_rounded(self.std)})"]
        evaluation = [f"Resize({self.resize_size})", f"CenterCrop({self.image_size})"]
        return [f"train: {' + '.join(train + tail)}",
                f"validation, test, predict: {' + '.join(evaluation + tail)}",
                f"mean and std: {self.statistics}; nothing is computed from your images",
                f"loading: DataLoader with {self.num_workers} worker process{'es' if self.num_workers != 1 else ''}"
                f"{f', prefetch_factor={self.prefetch_factor}' if self.num_workers else ''}; pinned memory, "
                "channels_last and the float cast on the GPU when training on one"]


def _rounded(values) -> list:
    return [round(float(v), 3) for v in values]


@dataclass(repr=False)
class ImagePreprocessReport(Report):
    title = "Preprocessing report (images)"
    train_rows: int = 0
    val_rows: int = 0
    model: str = ""
    weights: object = None
    image_size: int = 0
    classes: list | None = None
    transforms: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def _summary(self) -> list[str]:
        named = {None: "none (random initialisation)", "DEFAULT": "torchvision's default pretrained weights"}
        weights = named.get(self.weights, str(self.weights)) if isinstance(self.weights, (str, type(None))) \
            else str(self.weights)
        lines = [f"{self.train_rows} train and {self.val_rows} validation images, {self.image_size}x{self.image_size} "
                 f"pixels, for {self.model} (weights: {weights}; fit() reports the weights it actually loaded)."]
        if self.classes is not None:
            lines.append(f"Classes, in the order of the model's outputs: {self.classes}.")
        lines.append("Learned from the train split: the class list only. Normalisation uses the model's own "
                     "statistics, so nothing here has seen validation or test images.")
        return lines

    def _sections(self):
        return [("Transforms", self.transforms)]


# ---- the split data object and its batches ------------------------------------------------------

@dataclass
class ImageSplit:
    """One split's images (paths or arrays), targets and row labels; `batches()` is the loop's view."""

    images: np.ndarray          # object array of paths or arrays
    y: np.ndarray               # int64 class ids, or float32 values
    index: pd.Index
    preprocessor: ImagePreprocessor
    augment: bool = False       # the train split only

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, device, scale: tuple = (0.0, 1.0)) -> ImageBatches:
        """Batches on `device`; a regression target is standardised with `scale` = (mean, std) for the loss."""
        device = torch.device(device)
        y = torch.as_tensor(self.y, device=device)
        y_fit = (y - scale[0]) / scale[1] if y.is_floating_point() else y
        return ImageBatches(self, device, y, y_fit)


class ImageDataset(torch.utils.data.Dataset):
    """Decodes and transforms one image (in a DataLoader worker); yields (uint8 image, its position)."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple:
        from torchvision import tv_tensors
        image = self.transform(tv_tensors.Image(read_image(self.images[position])))
        return image.as_subclass(torch.Tensor), position


class _Chunks:
    """The batch sampler of a persistent DataLoader: re-pointed at each epoch's batches before iterating."""

    def __init__(self):
        self.chunks: list = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class ImageBatches:
    """The loop's view of an ImageSplit (protocol: nbtrain.data.batches). Batches come from a DataLoader
    whose workers live as long as this object (one run): `close()` ends them."""

    input_names = ("images",)
    probe_rows = 128    # the doctor's start probe: enough images for layer statistics, a few seconds on a CPU

    def __init__(self, split: ImageSplit, device: torch.device, y: torch.Tensor, y_fit: torch.Tensor):
        self.split, self.y, self.y_fit = split, y, y_fit
        pre = split.preprocessor
        self._normalise = normalisation(pre.mean, pre.std)
        # "own": the split's transform (augmented for train only); "eval": the deterministic one
        self._datasets = {mode: ImageDataset(split.images, geometric_transform(pre.image_size, pre.resize_size,
                                                                               mode == "own" and split.augment,
                                                                               pre.flip))
                          for mode in ("own", "eval")}
        self._loaders: dict = {}

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.y.device

    def take(self, rows: torch.Tensor) -> tuple:
        """(inputs, y_fit) of these rows, decoded here without workers (the doctor's probes, the lr finder)."""
        # the random crops draw from a forked generator: probing a run must not change the run
        with torch.random.fork_rng(devices=[]):
            images = torch.stack([self._datasets["own"][i][0] for i in rows.tolist()])
        return (self._to_device(images),), self.y_fit[rows.to(self.device)]

    def load(self, chunks):
        """The epoch's batches in the order of `chunks` (row indices), decoded by the workers ahead of use."""
        parts = list(chunks)
        sizes = [len(part) for part in parts]
        indices = torch.cat(parts).cpu().split(sizes) if parts else []  # one host sync per epoch, not per batch
        return self._iterate("own", [part.tolist() for part in indices])

    def evaluation_batches(self, batch_rows: int):
        """The split in order, with the eval transform, in batches of at most EVAL_BATCH images."""
        size = min(batch_rows, self.split.preprocessor.eval_batch)
        chunks = [list(range(start, min(start + size, len(self)))) for start in range(0, len(self), size)]
        for inputs, rows in self._iterate("eval", chunks, with_rows=True):
            yield EvaluationBatch(inputs, self.y_fit[rows], self.y[rows], len(rows), {})

    def _iterate(self, mode: str, chunks: list, with_rows: bool = False):
        loader = self._loader(mode)
        loader.batch_sampler.chunks = chunks
        for images, positions in loader:
            rows = positions.to(self.device, non_blocking=True)
            yield ((self._to_device(images),), rows) if with_rows else ((self._to_device(images),), self.y_fit[rows])

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":  # convolutions on NHWC run on tensor cores without transposes
            images = images.contiguous(memory_format=torch.channels_last)
        return self._normalise(images)

    def _loader(self, mode: str) -> torch.utils.data.DataLoader:
        if mode not in self._loaders:
            pre = self.split.preprocessor
            workers = pre.num_workers
            self._loaders[mode] = torch.utils.data.DataLoader(
                self._datasets[mode], batch_sampler=_Chunks(), num_workers=workers,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=pre.prefetch_factor if workers > 0 else None,
                worker_init_fn=ignore_interrupts if workers > 0 else None)
        return self._loaders[mode]

    def close(self) -> None:
        """End the worker processes (they would otherwise live until this object is collected)."""
        for loader in self._loaders.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._loaders.clear()


def ignore_interrupts(worker_id: int) -> None:
    """In a worker: ignore SIGINT. Kernel > Interrupt and Ctrl-C signal the whole process group, and a
    worker that got one would exit at once, turning the training process's graceful stop into "DataLoader
    worker exited unexpectedly"; the training process ends its workers itself (ImageBatches.close)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    """min(4, cores - 1): decoding keeps pace with a small model, and one core stays with the training loop."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def check_loading(num_workers, prefetch_factor) -> tuple[int, int]:
    workers = default_workers() if num_workers == "auto" else num_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"num_workers must be 'auto' or a whole number >= 0 (0: decode in the training process); "
                          f"received {num_workers!r}.")
    if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, int) or prefetch_factor < 1:
        raise ConfigError(f"prefetch_factor must be a whole number >= 1 (batches each worker decodes ahead); "
                          f"received {prefetch_factor!r}.")
    return workers, prefetch_factor


def new_images(new_data, image_col) -> pd.DataFrame:
    """New images as rows of `image_col` (see as_image_frame); DataError naming those that cannot be read."""
    rows = as_image_frame(new_data, image_col)
    problems = [(label, image_problem(v)[0]) for label, v in rows[image_col].items()]
    bad = [(label, why) for label, why in problems if why is not None]
    if bad:
        shown = "; ".join(f"{label!r}: {why}" for label, why in bad[:_EXAMPLES])
        raise DataError(f"{len(bad)} of {len(rows)} new images cannot be read: {shown}. Fix or drop them.")
    return rows
