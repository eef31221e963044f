"""Image training throughput: nbtrain's fit against a hand-written loop, same model, data and steps.

Both train the same torchvision model (nt.models.vision, random weights: no download, no frozen
phase) from the same initial weights, with AdamW, on the same train images (PNG files, decoded by
DataLoader workers with the same augmentation), for the same number of optimizer steps. On CUDA both
use bf16 autocast and channels_last. The hand-written loop is the usual tutorial one: a Dataset that
opens each file with PIL, a v2 transform ending in ToDtype + Normalize in the workers,
DataLoader(shuffle=True, pin_memory, persistent_workers), non_blocking copies. nbtrain decodes to
uint8 in the workers and normalises on the device.

Only ratios measured in one run mean anything (machines are shared); contenders alternate and the
median of the repeats is reported. Samples/s count training steps only (data loading included,
validation excluded), for both.

    python benchmarks/bench_image.py                                   # CPU: 32 px, batch 32, ~1 min
    python benchmarks/bench_image.py --device cuda --image-size 224 --batch-size 256 --images 20000 --steps 200
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import nbtrain as nt
from nbtrain.kinds.image.data import CROP_SCALE, default_workers, read_image


def write_images(root: Path, count: int, classes: int, side: int = 64) -> None:
    """Noisy images whose class is a stripe frequency, as PNG files in class subfolders."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:side, :side]
    for i in range(count):
        label = i % classes
        pattern = (np.sin((x + y * (label % 2)) * (label + 1) * np.pi / side) + 1) * 100
        pixels = np.clip(pattern[..., None] + rng.normal(0, 25, (side, side, 3)), 0, 255).astype(np.uint8)
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def make_pipeline(args, folder: Path, workdir: str):
    pipe = nt.Pipeline.from_folder(folder, workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(model=args.model, image_size=args.image_size, weights=None, num_workers=args.workers)
    return pipe


def new_model(pipe, model_name: str) -> nn.Module:
    torch.manual_seed(0)
    return nt.models.vision(model_name, pretrained=False, n_outputs=pipe.n_outputs)


def with_nbtrain(pipe, args, epochs: int) -> float:
    run = pipe.fit(new_model(pipe, args.model), batch_size=args.batch_size, epochs=epochs, patience=None,
                   schedule="none", device=args.device, view=None, doctor=not args.no_doctor)
    return run.samples_per_s


class Files(torch.utils.data.Dataset):
    """The tutorial Dataset: open the file with PIL, apply a v2 transform, return (tensor, label)."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


def with_loop(pipe, args, epochs: int) -> float:
    from torchvision.transforms import v2
    pre, device = pipe.preprocessor_, torch.device(args.device)
    transform = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(pre.image_size, scale=CROP_SCALE, antialias=True),
                            v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(list(pre.mean), list(pre.std))])
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(Files(pipe.train.images, pipe.train.y, transform),
                                         batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         pin_memory=cuda, persistent_workers=args.workers > 0)
    model = new_model(pipe, args.model).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            images = images.contiguous(memory_format=torch.channels_last) if cuda else images
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(labels)
    if cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per contender (whole epochs)")
    parser.add_argument("--images", type=int, default=600, help="images written (70%% become the train split)")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-doctor", action="store_true", help="fit without the training doctor")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, args.images, classes=10)
        pipe = make_pipeline(args, folder, str(Path(tmp) / "runs"))
        per_epoch = math.ceil(len(pipe.train) / args.batch_size)
        epochs = max(1, round(args.steps / per_epoch))
        read_image(pipe.train.images[0])  # PIL's plugins load once, outside the timings
        print(f"device {args.device}, {args.model} at {args.image_size} px, batch {args.batch_size}, "
              f"{len(pipe.train)} train images, {epochs} epochs x {per_epoch} steps, {args.workers} workers, "
              f"torch threads {torch.get_num_threads()}")
        results = {"nbtrain": [], "hand-written": []}
        for _ in range(args.repeats):
            results["nbtrain"].append(with_nbtrain(pipe, args, epochs))
            results["hand-written"].append(with_loop(pipe, args, epochs))
    ours, theirs = (statistics.median(results[k]) for k in ("nbtrain", "hand-written"))
    print(f"nbtrain      {ours:10,.0f} samples/s")
    print(f"hand-written {theirs:10,.0f} samples/s")
    print(f"ratio nbtrain / hand-written: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
