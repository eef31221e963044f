"""The image kind: folders and frames of images, weights, the two-phase fine-tuning, augmentation only
on train, corrupt files, content hashes, and a small end-to-end run (tiny images, seconds each)."""

import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning, TestSetLockedError
from nbtrain.kinds.image import data as images
from nbtrain.kinds.image.models import VisionModel, vision
from nbtrain.kinds.image.pipeline import ImagePipeline
from nbtrain.training.callbacks import Callback

SIZE = 16
SMALL = "mobilenet_v3_small"  # 2.5M parameters: a training step in tens of milliseconds on one core


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def stripes(kind: str, rng, size: int = 20) -> np.ndarray:
    """A noisy RGB image of horizontal ("h"), vertical ("v") or diagonal ("d") stripes."""
    y, x = np.mgrid[:size, :size]
    wave = {"h": y, "v": x, "d": x + y}[kind]
    base = ((wave // 3) % 2) * 170 + rng.integers(0, 60, size=(size, size))
    return np.repeat(base[..., None], 3, axis=2).astype(np.uint8)


def make_folder(root: Path, per_class: int = 12, classes=("h", "v"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(stripes(label, rng)).save(root / label / f"{label}{i:02d}.png")
    return root


def ready(root: Path, workdir: Path, **options) -> ImagePipeline:
    pipe = nt.Pipeline.from_folder(root, workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(**{"image_size": SIZE, "weights": None, "num_workers": 0, "flip": False, **options})
    return pipe


# ---- input -------------------------------------------------------------------------------------

def test_from_folder_lists_class_subfolders(tmp_path, workdir):
    root = make_folder(tmp_path / "data", per_class=3)
    (root / "h" / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    pipe = nt.Pipeline.from_folder(root, workdir=workdir)
    assert isinstance(pipe, ImagePipeline) and (pipe.kind, pipe.task, pipe.image_col) == ("image", "binary", "image")
    assert sorted(pipe._data.index) == [f"{c}/{c}{i:02d}.png" for c in "hv" for i in range(3)]
    assert set(pipe._data["label"]) == {"h", "v"}


@pytest.mark.parametrize("layout, message", [
    ("missing", r"'.*nowhere' does not exist"),
    ("file", r"is a file, not a folder"),
    ("loose", r"has no class subfolders. It holds 2 images directly: move them into one subfolder per class"),
    ("empty", r"class subfolders of .* \(\['a', 'b'\]\) hold no image files"),
    ("one", r"has images for one class only, 'a' \(subfolders without images: \['b'\]\); a classifier needs at "
            r"least two"),
])
def test_from_folder_errors_say_what_is_wrong(tmp_path, workdir, layout, message):
    root = tmp_path / "nowhere"
    rng = np.random.default_rng(0)
    if layout == "file":
        root.write_text("x")
    elif layout == "loose":
        root.mkdir()
        for i in range(2):
            Image.fromarray(stripes("h", rng)).save(root / f"{i}.png")
    elif layout in ("empty", "one"):
        (root / "a").mkdir(parents=True), (root / "b").mkdir()
        (root / "a" / "readme.md").write_text("x")
        if layout == "one":
            Image.fromarray(stripes("h", rng)).save(root / "a" / "0.png")
    with pytest.raises(DataError, match=message):
        nt.Pipeline.from_folder(root, workdir=workdir)


def test_a_frame_of_paths_is_recognised_as_images(tmp_path, workdir):
    root = make_folder(tmp_path / "data", per_class=3)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    frame = pd.DataFrame({"file": paths, "label": [Path(p).parent.name for p in paths]})  # pandas' string dtype
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    assert isinstance(pipe, ImagePipeline) and pipe.image_col == "file" and nt.models.vision is vision
    assert pipe.clean().rows_out == 6


def test_a_frame_of_arrays_is_an_image_pipeline(workdir):
    rng = np.random.default_rng(1)
    arrays = [stripes(k, rng)[..., 0] for k in "hv" * 8] + [stripes("h", rng) / 255.0 for _ in range(4)]
    frame = pd.DataFrame({"pixels": arrays + [np.full((4, 4), 300.0)], "label": list("hv" * 8) + ["h"] * 5,
                          "note": "x"})
    pipe = nt.Pipeline(frame, target="label", workdir=workdir)
    assert isinstance(pipe, ImagePipeline) and pipe.image_col == "pixels"
    report = pipe.clean()
    assert report.unreadable == 1 and "float pixels outside [0, 1]" in repr(report)
    assert report.dropped_columns == {"note": "not used: the model reads only the image column"}
    assert report.sizes["max"] == (20, 20)
    gray, color = images.read_image(arrays[0]), images.read_image(arrays[-1])
    assert gray.shape == color.shape == (3, 20, 20) and gray.dtype == color.dtype == torch.uint8
    assert torch.equal(gray[0], gray[2])  # grayscale becomes three equal channels


def test_without_torchvision_the_error_says_what_to_install(monkeypatch, workdir):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    with pytest.raises(ConfigError, match=r"Images need torchvision, not installed here: pip install "
                                          r"'nbtrain\[vision\]'"):
        ImagePipeline(pd.DataFrame({"image": ["a.png"], "label": ["a"]}), "label", workdir=workdir)


def test_corrupt_image_files_are_reported_and_dropped(tmp_path, workdir):
    root = make_folder(tmp_path / "data", per_class=6)
    good = (root / "h" / "h00.png").read_bytes()
    (root / "h" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "v" / "text.png").write_text("this is not a picture")
    (root / "v" / "empty.png").write_bytes(b"")
    pipe = nt.Pipeline.from_folder(root, workdir=workdir)
    report = pipe.clean()
    assert (report.rows_in, report.unreadable, report.rows_out) == (15, 3, 12)
    reasons = dict(report.unreadable_examples)
    assert reasons["h/truncated.png"].startswith("truncated or corrupt")
    assert reasons["v/text.png"] == "not an image (PIL cannot identify it)"
    assert reasons["v/empty.png"] == "empty file (0 bytes)"
    assert "Dropped 3 rows whose image cannot be read, e.g. 'h/truncated.png'" in repr(report)
    assert not set(reasons) & set(pipe._frame.index)


def test_duplicates_are_found_by_content_not_by_name(tmp_path, workdir):
    root = make_folder(tmp_path / "data", per_class=20)
    shutil.copy(root / "h" / "h00.png", root / "h" / "copy-of-h00.png")      # same image, same label: dropped
    for i in range(8):                                                        # same image, other label: reported
        shutil.copy(root / "h" / f"h{i + 1:02d}.png", root / "v" / f"really-h{i}.png")
    pipe = nt.Pipeline.from_folder(root, workdir=workdir)
    report = pipe.clean()
    assert report.duplicates == 1 and report.duplicate_examples == [("h/h00.png", "h/copy-of-h00.png")]
    assert report.conflicting == 16 and "also appears under another label" in report.warnings[0]
    split = pipe.split()
    # the copies under two labels are the same image: across splits, the split report says so
    assert any("have exactly the same features as a train row" in w for w in split.warnings)


def test_eval_batches_are_never_augmented(tmp_path, workdir):
    pipe = ready(make_folder(tmp_path / "data", per_class=10), workdir, flip=True)
    pre = pipe.preprocessor_
    assert pipe.train.augment and not pipe.val.augment
    val = pipe.val.batches("cpu")
    first = torch.cat([b.inputs[0] for b in val.evaluation_batches(4)])
    again = torch.cat([b.inputs[0] for b in val.evaluation_batches(1000)])
    paths = pipe.val.images
    expected = torch.stack([pre.eval_transform(images.read_image(p)) for p in paths])
    assert torch.equal(first, again) and torch.allclose(first, expected, atol=1e-6)
    # the train split's own evaluation batches use the eval transform too
    train = pipe.train.batches("cpu")
    evaluated = torch.cat([b.inputs[0] for b in train.evaluation_batches(64)])
    assert torch.allclose(evaluated, torch.stack([pre.eval_transform(images.read_image(p)) for p in pipe.train.images]),
                          atol=1e-6)
    # training batches of the same rows differ from epoch to epoch, and from the eval view
    rows = torch.arange(len(train))
    epoch1, epoch2 = (next(iter(train.load([rows])))[0][0] for _ in range(2))
    assert not torch.equal(epoch1, epoch2) and not torch.allclose(epoch1, evaluated)
    # test and prediction rows go through split_data, whose default is the eval transform
    assert not pre.split_data(pipe._rows("test")).augment


def test_load_yields_batches_in_the_given_order_through_a_worker(tmp_path, workdir):
    pipe = ready(make_folder(tmp_path / "data", per_class=6), workdir, num_workers=1)
    split = pipe.val.__class__(images=pipe._frame["image"].to_numpy(dtype=object),
                               y=np.arange(len(pipe._frame), dtype=np.float32), index=pipe._frame.index,
                               preprocessor=pipe.preprocessor_)
    batches = split.batches("cpu")
    chunks = [torch.tensor([5, 1, 3]), torch.tensor([0, 2]), torch.tensor([7])]
    got = list(batches.load(chunks))
    assert [y.tolist() for _, y in got] == [[5.0, 1.0, 3.0], [0.0, 2.0], [7.0]]
    expected = pipe.preprocessor_.eval_transform(images.read_image(split.images[1]))
    assert torch.allclose(got[0][0][0][1], expected, atol=1e-6)
    assert multiprocessing.active_children()  # the worker persists between epochs...
    batches.close()
    assert not multiprocessing.active_children()  # ...until the run ends


# ---- the model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, head", [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"),
                                        ("efficientnet_b0", "classifier.1"), ("vit_b_16", "heads.head")])
def test_the_head_is_replaced_for_n_outputs(name, head):
    model = vision(name, pretrained=False, n_outputs=3)
    assert model.head_path == head and model.head_module.out_features == 3 and model.n_outputs == 3
    assert {id(p) for p in model.head} == {id(p) for p in model.head_module.parameters()}
    assert len(model.head) + len(model.backbone) == len(list(model.parameters()))
    if name != "vit_b_16":  # ViT takes 224 px only
        assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_unknown_models_and_head_layouts_are_refused():
    with pytest.raises(ConfigError, match=r"'resnet181' is not a torchvision classification model. Did you mean "
                                          r"'resnet18'"):
        vision("resnet181", pretrained=False)
    with pytest.raises(ConfigError, match=r"does not know where the classifier head of 'squeezenet1_0' is"):
        vision("squeezenet1_0", pretrained=False, n_outputs=2)


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(7)
    from torchvision.models import resnet18
    original = resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(original.state_dict(), path)
    model = vision("resnet18", weights=str(path), n_outputs=3)
    assert model.weights_source == f"file {path}"
    loaded, saved = model.net.state_dict(), original.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved if not k.startswith("fc."))
    assert model.notes == ["The head in file " + str(path) + " has 1000 outputs and this model 3: it was skipped, "
                           "and the new head starts from random weights."]
    assert (model.freeze_epochs, model.backbone_lr_scale) == (1, 0.1)  # "auto" with loaded weights
    # a head of the same size is loaded too; nbtrain's own checkpoints ({"model": state}) are read as well
    torch.save({"model": model.state_dict()}, tmp_path / "best.pt")
    again = vision("resnet18", weights=tmp_path / "best.pt", n_outputs=3)
    assert torch.equal(again.net.fc.weight, model.net.fc.weight) and again.notes == []


def test_weights_that_do_not_fit_are_refused(tmp_path):
    from torchvision.models import mobilenet_v3_small
    torch.save(mobilenet_v3_small().state_dict(), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"The weights in file .*other.pth do not fit torchvision's resnet18: \d+ of "
                                          r"its tensors are missing \(e.g. \['conv1.weight'"):
        vision("resnet18", weights=tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"weights='.*absent.pth': no such file"):
        vision("resnet18", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(ConfigError, match=r"weights='IMAGENET9' is neither a file nor weights of resnet18; use "
                                          r"'DEFAULT', one of \['IMAGENET1K_V1'\]"):
        vision("resnet18", weights="IMAGENET9")


def test_torchvision_weights_come_from_its_cache(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(3)
    original = resnet18()
    torch.save(original.state_dict(), cached)
    model = vision("resnet18", n_outputs=2)  # pretrained=True, no weights: torchvision's default
    assert model.weights_source == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(model.net.conv1.weight, original.conv1.weight)


def test_offline_the_model_says_it_starts_from_random_weights(tmp_path, monkeypatch):
    from urllib.error import URLError
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: torchvision must download

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.warns(NbtrainWarning, match=r"resnet18: the pretrained weights ResNet18_Weights.IMAGENET1K_V1 are not "
                                            r"available here .* the model starts from random weights"):
        model = vision("resnet18", weights="DEFAULT", n_outputs=2)
    assert model.weights_source.startswith("none: random initialisation (torchvision could not download or read "
                                           "ResNet18_Weights.IMAGENET1K_V1: <urlopen error")
    assert (model.freeze_epochs, model.backbone_lr_scale) == (0, 1.0)  # nothing pretrained to protect
    rebuilt = VisionModel.from_config(model.config)
    assert rebuilt.weights_source == model.weights_source and rebuilt.n_outputs == 2


class Watch(Callback):
    """Records what the backbone and head look like at the start of fit and after each epoch."""

    def __init__(self):
        self.grad_at_start, self.snapshots = None, []

    def attach(self, loop):
        self.loop = loop

    def on_fit_start(self, state):
        model = self.loop.model
        self.grad_at_start = ({p.requires_grad for p in model.backbone}, {p.requires_grad for p in model.head})
        self.snapshots.append(self.copy())

    def on_epoch_end(self, state):
        self.snapshots.append(self.copy())

    def copy(self):
        model = self.loop.model
        norm = next(m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        return {"conv": model.backbone[0].detach().clone(), "bn": norm.running_mean.clone(),
                "fc": model.head_module.weight.detach().clone()}


def test_the_backbone_is_frozen_for_freeze_epochs_then_fine_tuned_slower(tmp_path, workdir):
    pipe = ready(make_folder(tmp_path / "data", per_class=12), workdir)
    model = vision(SMALL, pretrained=False, n_outputs=pipe.n_outputs, freeze_epochs=1, backbone_lr_scale=0.1)
    watch = Watch()
    run = pipe.fit(model, epochs=3, batch_size=8, patience=None, schedule="none", lr=1e-3, callbacks=[watch],
                   view=None)
    assert watch.grad_at_start == ({False}, {True})
    start, epoch1, epoch2 = watch.snapshots[:3]
    assert torch.equal(start["conv"], epoch1["conv"]) and torch.equal(start["bn"], epoch1["bn"])  # frozen
    assert not torch.equal(start["fc"], epoch1["fc"])                                               # head learns
    assert not torch.equal(epoch1["conv"], epoch2["conv"]) and not torch.equal(epoch1["bn"], epoch2["bn"])
    groups = watch.loop.optimizer.param_groups
    head = next(g for g in groups if any(p is model.head_module.weight for p in g["params"]))
    conv = next(g for g in groups if any(p is model.backbone[0] for p in g["params"]))
    assert head["lr"] == 1e-3 and conv["lr"] == pytest.approx(1e-4)
    assert all(p.requires_grad for p in run.model.parameters()) and not run.model.frozen  # whole again
    assert run.config["model_config"]["freeze_epochs"] == 1


# ---- the pipeline ------------------------------------------------------------------------------

def test_preprocess_records_the_model_statistics_and_checks_its_arguments(tmp_path, workdir):
    pipe = nt.Pipeline.from_folder(make_folder(tmp_path / "data", per_class=4), workdir=workdir)
    pipe.clean()
    with pytest.raises(LeakageError, match=r"comes after split\(\).*call pipe.split\(\) first"):
        pipe.preprocess()
    pipe.split()
    report = pipe.preprocess(model="efficientnet_b0", weights=None)
    assert pipe.preprocessor_.image_size == 224 and pipe.preprocessor_.mean == (0.485, 0.456, 0.406)
    assert "EfficientNet_B0_Weights.IMAGENET1K_V1 (the pretrained weights' own statistics)" in repr(report)
    assert "Learned from the train split: the class list only" in repr(report)
    with pytest.raises(ConfigError, match=r"model='resnet' is not a torchvision classification model. Did you mean"):
        pipe.preprocess(model="resnet")
    with pytest.raises(ConfigError, match=r"weights='missing.pth': no such file"):
        pipe.preprocess(weights="missing.pth")
    with pytest.raises(ConfigError, match=r"num_workers must be 'auto' or a whole number >= 0"):
        pipe.preprocess(num_workers=-1)


def test_end_to_end_fit_test_predict(tmp_path, workdir):
    root = make_folder(tmp_path / "data", per_class=20, classes=("h", "v", "d"))
    pipe = ready(root, workdir, num_workers=1, model=SMALL)
    run = pipe.fit(epochs=3, batch_size=16, view=None)
    assert not multiprocessing.active_children()  # the run's loader workers ended with it
    assert run.notes[0] == "Weights: none: random initialisation (pretrained=False)."
    assert run.config["model_config"]["name"] == SMALL and len(run.history) == 3
    test_rows = pipe._rows("test")
    sealed = test_rows["image"].iloc[0]
    with pytest.raises(LeakageError, match=r"1 of 1 new images are images of this pipeline's test split"):
        pipe.predict([sealed])
    report = pipe.test()
    assert set(report.predictions.index) == set(test_rows.index) and 0 <= report.metrics["accuracy"] <= 1
    predicted = pipe.predict(root / "h")
    assert list(predicted.columns) == ["prediction", "probability_d", "probability_h", "probability_v"]
    assert predicted.index[0] == "h00.png" and np.allclose(predicted.filter(like="prob").sum(axis=1), 1, atol=1e-5)
    # the same pixels from a stack of arrays give the same predictions (eval transform, no augmentation)
    arrays = np.stack([np.asarray(Image.open(root / "h" / f)) for f in predicted.index[:3]])
    assert np.allclose(pipe.predict(arrays).filter(like="prob").to_numpy(),
                       predicted.filter(like="prob").to_numpy()[:3], atol=1e-5)
    with pytest.raises(DataError, match=r"1 of 1 new images cannot be read: 0: file not found"):
        pipe.predict([str(root / "nothing.png")])
    with pytest.raises(ConfigError, match=r"baseline\(\) fits gradient-boosted trees on table columns"):
        pipe.baseline()
    # the test lock follows the pixels: the same images in another folder are the same dataset
    moved = shutil.copytree(root, tmp_path / "elsewhere")
    again = ready(moved, workdir, model=SMALL)
    assert again.fingerprint == pipe.fingerprint and again.split_id == pipe.split_id
    again.fit(epochs=1, batch_size=16, view=None, doctor=False)
    with pytest.raises(TestSetLockedError):
        again.test()
