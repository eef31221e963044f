"""Bundles of the other kinds: a fine-tuned text model saved with its tokenizer, loaded in a fresh process
(offline), predicting what the pipeline predicted; sealed test texts refused; crafted files refused."""

import json
import os

import pandas as pd
import pytest

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning

from bundle_files import members_of, predicted_elsewhere, rebuilt, setting
from test_text import Bag, reviews

pytest.importorskip("transformers")

NEW = pd.DataFrame({"review": ["the snack was tasty and fresh", "stale and soggy, never again"]}, index=[7, 9])


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory):
    """MiniLM fine-tuned for one epoch on 40 reviews (and a TF-IDF baseline), saved before test()."""
    import torch
    from threadpoolctl import threadpool_limits
    folder = tmp_path_factory.mktemp("text-bundle")
    frame = reviews(40)
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        pipe = nt.Pipeline(frame, target="score", kind="text", workdir=folder / "runs")
        pipe.clean(), pipe.split()
        pipe.preprocess(max_length=32)
        pipe.baseline(tune=False)
        run = pipe.fit(epochs=1, view=None, doctor=False)
        path = pipe.save(folder / "reviews.nbtrain", run=run)
    return pipe, frame, run, path


def test_a_text_bundle_predicts_in_a_fresh_offline_process_as_the_pipeline_did(text_bundle, tmp_path):
    pipe, frame, run, path = text_bundle
    rows = pd.concat([frame.loc[pipe.val.index, ["review"]], NEW])
    expected = pipe.predict(rows, run=run)
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # the bundle must be enough
    predicted, shown = predicted_elsewhere(path, rows, tmp_path, env=offline)
    pd.testing.assert_frame_equal(predicted, expected, rtol=1e-5)
    assert f"Run {run.name!r} (TextModel) predicting 'score': binary, probability of 'other' (else 'great')." in shown
    assert f"Reads the text column 'review' with the tokenizer BertTokenizer" in shown
    assert f"(fingerprint {pipe.preprocessor_.fingerprint_[:12]}), up to 32 tokens" in shown
    assert "Test split: sealed; its 6 rows are refused until pipe.test()." in shown
    assert "  - Split: stratified (ratios 70%/15%/15%, seed 0); rows train 28, val 6, test 6." in shown


def test_the_text_bundle_holds_the_tokenizer_its_fingerprint_max_length_and_labels(text_bundle):
    pipe, _, run, path = text_bundle
    members = members_of(path)
    manifest = json.loads(members["manifest.json"])
    assert (manifest["kind"], manifest["bundle_version"], manifest["classes"]) == ("text", 3, ["great", "other"])
    assert manifest["text"] == {"text_col": "review", "max_length": 32, "tokenizer": pipe.preprocessor_.tokenizer_name_,
                                "tokenizer_fingerprint": pipe.preprocessor_.fingerprint_}
    assert manifest["model"] == {"module": "nbtrain.kinds.text.models", "qualname": "TextModel",
                                 "config": {"name_or_path": None, "n_outputs": 1}}
    names = set(members) - {"manifest.json"}
    assert {"sealed.npy", "model/config.json", "model/model.safetensors", "model/tokenizer.json",
            "model/tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".py"))]  # nothing a loader would unpickle
    assert manifest["info"]["packages"]["transformers"]
    assert manifest["evidence"]["preprocessing"]["fitted"].startswith("the maximum length")


def test_a_loaded_text_model_refuses_the_sealed_test_texts(text_bundle):
    pipe, frame, _, path = text_bundle
    test_texts = frame.loc[pipe._rows("test").index[:2], ["review"]]
    with pytest.raises(LeakageError, match=r"the test split of the pipeline this model was saved from; it was saved "
                                           r"before pipe.test\(\), so they stay sealed in it"):
        nt.load(path).predict(test_texts)
    with pytest.raises(DataError, match=r"1 of 2 new rows have no text"):
        nt.load(path).predict(pd.DataFrame({"review": ["fine", None]}))


def test_only_a_fine_tuned_text_model_is_bundled(text_bundle, tmp_path):
    pipe, _, _, _ = text_bundle
    baseline = next(r for r in pipe._runs() if r.kind == "baseline")
    with pytest.raises(ConfigError, match=rf"run {baseline.name!r} is the TF-IDF baseline. Choose a fine-tuned run"):
        pipe.save(tmp_path / "b.nbtrain", run=baseline)
    with pytest.warns(NbtrainWarning, match="carries no tokenizer"):
        bag = pipe.fit(Bag(1), epochs=1, lr=1e-2, view=None, doctor=False)
    with pytest.raises(ConfigError, match=rf"run {bag.name!r} is a Bag\. .*keep this one's checkpoint"):
        pipe.save(tmp_path / "bag.nbtrain", run=bag)


def test_crafted_text_bundles_are_refused(text_bundle, tmp_path):
    _, _, _, path = text_bundle
    pickled = rebuilt(path, tmp_path / "pickled.nbtrain", add={"model/pytorch_model.bin": b"\x80\x04K\x01."})
    with pytest.raises(DataError, match=r"found \['model/pytorch_model.bin'\]. A pickled or code file is never loaded"):
        nt.load(pickled)
    code = rebuilt(path, tmp_path / "code.nbtrain", add={"model/modeling_evil.py": b"import os"})
    with pytest.raises(DataError, match=r"found \['model/modeling_evil.py'\]"):
        nt.load(code)
    other = rebuilt(path, tmp_path / "fingerprint.nbtrain",
                    setting("text", tokenizer_fingerprint="0" * 64))
    with pytest.raises(DataError, match=r"its tokenizer's files read back as fingerprint .*, but the model was trained "
                                        r"on texts encoded with 000000000000"):
        nt.load(other)
    unknown = rebuilt(path, tmp_path / "kind.nbtrain", setting(kind="audio"))
    with pytest.raises(DataError, match=r"its manifest names the kind \"audio\"; this nbtrain reads bundles of tables "
                                        r"and of \['image', 'interactions', 'ranking', 'text', 'timeseries'\]"):
        nt.load(unknown)
    missing = rebuilt(path, tmp_path / "noweights.nbtrain", drop=("model/model.safetensors",))
    with pytest.raises(DataError, match=r"its model/ folder lacks config.json or the safetensors weights"):
        nt.load(missing)
    broken = tmp_path / "truncated.nbtrain"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"is (a )?damaged"):
        nt.load(broken)


# ---- images --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory):
    """A ResNet-18 (random start: no download) trained on 32-pixel striped images of three classes, saved before
    test(). (MobileNetV3-small from random weights at this size predicts one constant: no test of parity.)"""
    import torch
    from threadpoolctl import threadpool_limits
    from test_images import make_folder, ready
    folder = tmp_path_factory.mktemp("image-bundle")
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        pipe = ready(make_folder(folder / "images", classes=("h", "v", "d")), folder / "runs", model="resnet18",
                     image_size=32)
        run = pipe.fit(epochs=2, lr=3e-3, batch_size=8, view=None, doctor=False)
        path = pipe.save(folder / "stripes.nbtrain")
    return pipe, run, path, folder / "images"


def test_an_image_bundle_predicts_in_a_fresh_process_as_the_pipeline_did(image_bundle, tmp_path):
    pipe, run, path, root = image_bundle
    rows = pipe._frame.loc[pipe.val.index, ["image"]]
    expected = pipe.predict(rows)
    assert expected.filter(like="probability").round(6).drop_duplicates().shape[0] > 1  # not a constant model
    predicted, shown = predicted_elsewhere(path, rows, tmp_path)
    pd.testing.assert_frame_equal(predicted, expected, rtol=1e-5)
    assert f"Run {run.name!r} (VisionModel) predicting 'label': multiclass over ['d', 'h', 'v']." in shown
    assert "Reads images from 'image': Resize(37) + CenterCrop(32), normalised with ResNet18_Weights" in shown
    from test_images import make_folder
    fresh = make_folder(tmp_path / "fresh", per_class=3, seed=7) / "h"  # new images, as a folder
    pd.testing.assert_frame_equal(nt.load(path).predict(fresh), pipe.predict(fresh), rtol=1e-5)


def test_the_image_bundle_holds_the_architecture_classes_and_eval_transform(image_bundle):
    pipe, _, path, _ = image_bundle
    members = members_of(path)
    manifest = json.loads(members["manifest.json"])
    assert set(members) == {"manifest.json", "weights.pt", "sealed.npy"}
    assert (manifest["kind"], manifest["classes"]) == ("image", ["d", "h", "v"])
    assert manifest["model"]["config"]["name"] == "resnet18" and manifest["model"]["config"]["n_outputs"] == 3
    pre = pipe.preprocessor_
    assert manifest["image"] == {"image_col": "image", "task": "multiclass", "model": "resnet18",
                                 "image_size": 32, "resize_size": pre.resize_size, "mean": list(pre.mean),
                                 "std": list(pre.std), "statistics": pre.statistics, "flip": False}
    loaded = nt.load(path).preprocessor
    assert str(loaded.eval_transform) == str(pre.eval_transform)


def test_a_loaded_image_model_refuses_the_sealed_test_images_and_crafted_files(image_bundle, tmp_path):
    pipe, _, path, _ = image_bundle
    with pytest.raises(LeakageError, match=r"the test split of the pipeline this model was saved from"):
        nt.load(path).predict(pipe._rows("test")[["image"]])
    sizes = rebuilt(path, tmp_path / "size.nbtrain", setting("image", image_size="32"))
    with pytest.raises(DataError, match=r"'image' should hold .* \(found a wrong or missing 'image_size'\)"):
        nt.load(sizes)
    other = rebuilt(path, tmp_path / "arch.nbtrain",
                    setting("model", "config", name="resnet34"))
    with pytest.raises(DataError, match=r"the saved weights do not fit 'resnet34' as torchvision builds it here"):
        nt.load(other)
    foreign = rebuilt(path, tmp_path / "class.nbtrain",
                      setting("model", module="os", qualname="system"))
    with pytest.raises(DataError, match=r"an image bundle holds nbtrain's VisionModel; its manifest names os.system"):
        nt.load(foreign)


def test_an_image_bundle_saved_before_the_kind_moved_still_loads(image_bundle, tmp_path):
    """Bundles written before the image kind moved into nbtrain.kinds.image name nbtrain.models.vision."""
    pipe, _, path, _ = image_bundle
    assert json.loads(members_of(path)["manifest.json"])["model"]["module"] == "nbtrain.kinds.image.models"
    old = rebuilt(path, tmp_path / "old.nbtrain",
                  setting("model", module="nbtrain.models.vision"))
    rows = pipe._frame.loc[pipe.val.index, ["image"]]
    pd.testing.assert_frame_equal(nt.load(old).predict(rows), pipe.predict(rows), rtol=1e-5)


# ---- time series ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series_bundle(tmp_path_factory):
    """An LSTM forecaster of weekly Mauna Loa CO2 (statsmodels), 12 weeks in, 2 out, saved before test()."""
    import statsmodels.api as sm
    import torch
    from threadpoolctl import threadpool_limits
    folder = tmp_path_factory.mktemp("series-bundle")
    co2 = sm.datasets.co2.load_pandas().data.reset_index().rename(columns={"index": "week"})
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        pipe = nt.Pipeline(co2, target="co2", kind="timeseries", time_col="week", workdir=folder / "runs")
        pipe.clean(), pipe.split(), pipe.preprocess(lookback=12, horizon=2)
        pipe.baseline()
        run = pipe.fit(nt.models.LSTMForecaster(1, 2, hidden=16, layers=1), epochs=2, view=None, doctor=False)
        path = pipe.save(folder / "co2.nbtrain", run=run)
    return pipe, co2, run, path


def test_a_forecaster_bundle_predicts_in_a_fresh_process_as_the_pipeline_did(series_bundle, tmp_path):
    pipe, co2, run, path = series_bundle
    history = co2[co2["week"] < pipe.sealed_from()]
    expected = pipe.predict(history, run=run)
    predicted, shown = predicted_elsewhere(path, history, tmp_path)
    pd.testing.assert_frame_equal(predicted, expected, rtol=1e-5)
    assert list(expected.columns) == ["t+1", "t+2"] and len(expected) == 1
    assert "Reads the last 12 rows of 'co2' by 'week' (weekly (W-SAT)); forecasts the next 2 step(s)." in shown
    assert "Test period: sealed; inputs from 1995-06-17 00:00:00 on are refused until pipe.test()." in shown
    manifest = json.loads(members_of(path)["manifest.json"])
    assert manifest["kind"] == "timeseries" and set(members_of(path)) == {"manifest.json", "weights.pt", "scaler.skops"}
    assert manifest["series"]["frequencies"] == [{"series": None, "frequency": {
        "kind": "fixed", "unit": {"timedelta_ns": 7 * 24 * 3600 * 10**9, "resolution": pipe.preprocessor_.frequencies[None].unit.unit}, "name": "weekly (W-SAT)", "season": 52}}]
    assert manifest["series"]["sealed_from"] == {"datetime": "1995-06-17T00:00:00"}


def test_a_forecaster_bundle_refuses_the_test_period_until_test_then_a_new_bundle_reads_it(series_bundle, tmp_path):
    pipe, co2, run, path = series_bundle
    with pytest.raises(LeakageError, match=r"reach into the test period \(from 1995-06-17 00:00:00\).* The bundle was "
                                           r"saved before pipe.test\(\)"):
        nt.load(path).predict(co2)
    pipe.test(run=run)
    after = nt.load(pipe.save(tmp_path / "after.nbtrain", run=run))
    assert "Test period: evaluated." in repr(after)
    pd.testing.assert_frame_equal(after.predict(co2), pipe.predict(co2, run=run), rtol=1e-5)


def test_several_series_with_a_covariate_round_trip(tmp_path):
    from test_timeseries import sine
    a, b = sine(150), sine(150, seed=1, level=1000.0)
    frame = pd.concat([a.assign(shop="a"), b.assign(shop="b")], ignore_index=True)
    pipe = nt.Pipeline(frame, target="y", kind="timeseries", time_col="day", series_col="shop", workdir=tmp_path / "r")
    pipe.clean(), pipe.split(), pipe.preprocess(lookback=10, horizon=3)
    run = pipe.fit(nt.models.LSTMForecaster(2, 3, hidden=8, layers=1), epochs=1, view=None, doctor=False)
    model = nt.load(pipe.save(tmp_path / "shops.nbtrain"))
    history = frame[frame["day"] < pipe.sealed_from()]
    pd.testing.assert_frame_equal(model.predict(history), pipe.predict(history, run=run), rtol=1e-5)
    assert model.predict(history).index.get_level_values("shop").tolist() == ["a", "b"]
    assert "and covariates ['temp'] by 'day' (daily (D)), per series of 'shop' (2); forecasts the next 3" in repr(model)


def test_forecaster_bundles_refuse_baselines_and_crafted_manifests(series_bundle, tmp_path):
    pipe, _, _, path = series_bundle
    naive = next(r for r in pipe._runs() if r.kind == "baseline")
    with pytest.raises(ConfigError, match=rf"run {naive.name!r} is a naive baseline, which needs no file"):
        pipe.save(tmp_path / "naive.nbtrain", run=naive)
    text = rebuilt(path, tmp_path / "lookback.nbtrain", setting("series", lookback="12"))
    with pytest.raises(DataError, match=r"'series' should hold .* \(found a wrong or missing 'lookback'\)"):
        nt.load(text)
    wider = rebuilt(path, tmp_path / "wider.nbtrain",
                    setting("model", "config", hidden=64))
    with pytest.raises(DataError, match=r"the saved weights do not fit nbtrain.kinds.timeseries.models.LSTMForecaster "
                                        r"built from the bundle's config"):
        nt.load(wider)
    extra = rebuilt(path, tmp_path / "extra.nbtrain", add={"preprocessor.skops": b"PK"})
    with pytest.raises(DataError, match=r"a forecaster's bundle holds \['scaler.skops', 'weights.pt'\]"):
        nt.load(extra)


def test_a_forecaster_bundle_saved_before_the_kind_moved_still_loads(series_bundle, tmp_path):
    """Bundles written before the time-series kind moved into nbtrain.kinds.timeseries name nbtrain.models.sequence:
    the class is found through the re-export there."""
    pipe, co2, run, path = series_bundle
    assert json.loads(members_of(path)["manifest.json"])["model"]["module"] == "nbtrain.kinds.timeseries.models"
    old = rebuilt(path, tmp_path / "old.nbtrain",
                  setting("model", module="nbtrain.models.sequence"))
    history = co2[co2["week"] < pipe.sealed_from()]
    pd.testing.assert_frame_equal(nt.load(old).predict(history), nt.load(path).predict(history), rtol=1e-6)


# ---- export of the other kinds -------------------------------------------------------------------


def test_a_text_model_exports_to_onnx_with_its_tokenizer_and_dynamic_batch_and_sequence(text_bundle, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer
    pipe, frame, run, _ = text_bundle
    report = pipe.export(tmp_path / "reviews.onnx", run=run)
    assert report.sample == "validation texts" and report.rows_checked == 6 and report.max_abs_diff <= 1e-4
    assert report.inputs == ["input_ids int64 (batch, sequence <= 32)", "attention_mask int64 (batch, sequence)"]
    assert f"Tokenizer: {tmp_path / 'reviews.tokenizer'}" in repr(report)
    # serving without nbtrain: the saved tokenizer, onnxruntime, texts of another length and batch size
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "reviews.tokenizer")
    texts = NEW["review"].tolist() + ["ok"]
    encoded = tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(tmp_path / "reviews.onnx"), providers=["CPUExecutionProvider"])
    served = session.run(None, {"input_ids": encoded["input_ids"].astype("int64"),
                                "attention_mask": encoded["attention_mask"].astype("int64")})[0]
    expected = pipe.predict(pd.DataFrame({"review": texts}), run=run)["probability_other"].to_numpy()
    assert served.shape == (3,) and abs(served - expected).max() < 1e-4


def test_an_image_model_exports_to_onnx_and_torch_export_checked_on_validation_images(image_bundle, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pipe, run, path, _ = image_bundle
    report = pipe.export(tmp_path / "stripes.onnx")
    assert report.sample == "validation images" and report.rows_checked == 6 and report.max_abs_diff <= 1e-4
    assert report.inputs[0].startswith("images float32 (batch, 3, 32, 32): Resize(37) + CenterCrop(32)")
    rows = pipe._frame.loc[pipe.val.index, ["image"]]
    batch = nt.load(path).export_inputs(rows).arrays[0]
    session = onnxruntime.InferenceSession(str(tmp_path / "stripes.onnx"), providers=["CPUExecutionProvider"])
    served = session.run(None, {"images": batch})[0]
    expected = pipe.predict(rows).filter(like="probability").to_numpy()
    assert served.shape == (6, 3) and abs(served - expected).max() < 1e-4
    loaded = nt.load(path).export(tmp_path / "stripes.pt2", "torch.export")  # from a bundle, on random images
    assert loaded.sample == "random images" and loaded.max_abs_diff <= 1e-4
