"""pipe.predict: new rows get the training repairs, the fitted preprocessing and a run's best weights."""

import re

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

import nbtrain as nt
from nbtrain.errors import DataError, LeakageError, NbtrainWarning, StageError
from nbtrain.training.evaluation import nn_predictions

from conftest import make_frame
from trained import sealed_rows, trained


@pytest.fixture(scope="module")
def pipe_and_frame(tmp_path_factory):
    """One trained pipeline for the tests that only read it (none of them calls test())."""
    with threadpool_limits(limits=1):  # the one_thread fixture does not reach module fixtures
        return trained(tmp_path_factory.mktemp("predict") / "runs", baseline=True)


def test_predict_equals_the_networks_outputs_on_the_validation_rows(pipe_and_frame):
    pipe, frame = pipe_and_frame
    run = next(r for r in pipe._runs() if r.kind == "nn")
    rows = frame.loc[pipe.val.index]
    predicted = pipe.predict(rows, run=run.name)
    expected = nn_predictions(run.model, pipe.val, pipe.task, (0.0, 1.0))
    assert list(predicted.columns) == ["prediction", "probability_a", "probability_b", "probability_c"]
    assert predicted.index.equals(rows.index)
    np.testing.assert_allclose(predicted.iloc[:, 1:].to_numpy(), expected, rtol=0, atol=1e-6)
    assert (predicted["prediction"] == np.array(pipe.classes, dtype=object)[expected.argmax(axis=1)]).all()
    without_target = pipe.predict(rows.drop(columns="label"), run=run.name)
    pd.testing.assert_frame_equal(without_target, predicted)


def test_predict_with_the_tree_baseline_equals_its_validation_predictions(pipe_and_frame):
    pipe, frame = pipe_and_frame
    run = next(r for r in pipe._runs() if r.kind == "baseline")
    predicted = pipe.predict(frame.loc[pipe.val.index], run=run)
    expected = run.model.predict(pipe._frame.loc[pipe.val.index])
    np.testing.assert_allclose(predicted.iloc[:, 1:].to_numpy(), expected, atol=1e-12)


def test_regression_predictions_are_in_the_targets_units(workdir):
    frame = make_frame()
    frame["label"] = frame["x1"] * 100 + 1000 + np.random.default_rng(1).normal(size=len(frame))
    pipe, _ = trained(workdir, frame)
    run = pipe.last_run
    predicted = pipe.predict(frame.loc[pipe.val.index])
    expected = nn_predictions(run.model, pipe.val, "regression", tuple(run.config["target_scale"]))
    assert list(predicted.columns) == ["prediction"]
    np.testing.assert_allclose(predicted["prediction"].to_numpy(), expected, rtol=1e-6)
    assert predicted["prediction"].mean() > 500  # data units, not the standardised target


def test_binary_predictions_give_the_positive_class_probability(workdir):
    pipe, frame = trained(workdir, make_frame(classes=("no", "yes")))
    predicted = pipe.predict(frame.loc[pipe.val.index])
    assert list(predicted.columns) == ["prediction", "probability_yes"]
    assert ((predicted["probability_yes"] >= 0.5) == (predicted["prediction"] == "yes")).all()


def test_test_rows_are_refused_until_test_then_allowed(workdir):
    pipe, frame = trained(workdir)
    sealed = frame.loc[sealed_rows(pipe)]
    mixed = pd.concat([frame.loc[pipe.val.index[:5]], sealed.iloc[:1]])
    message = (r"New rows belong to this pipeline's test split, which stays sealed until pipe.test\(\): 1 of 6 \(e.g. "
               r"rows \[\d+\]\). A prediction on them is a look at the test set by another door")
    with pytest.raises(LeakageError, match=message):
        pipe.predict(mixed)
    with pytest.raises(LeakageError, match=r"Call pipe.test\(\) first"):  # matched on the features alone too
        pipe.predict(sealed.drop(columns="label"))
    assert len(pipe.predict(frame.loc[pipe.train.index])) == len(pipe.train)
    report = pipe.test()
    predicted = pipe.predict(sealed)
    pd.testing.assert_frame_equal(predicted.loc[report.predictions.index], report.predictions, atol=1e-6)


SEALED_DISGUISES = {
    "a float32 cast": lambda rows: rows.astype({"x1": "float32", "x2": "float32"}),
    "1e-9 noise": lambda rows: rows.assign(x1=rows.x1 * (1 + 1e-9), x2=rows.x2 + 1e-9),
    "numbers stored as text": lambda rows: rows.astype({"x1": str}),
    "a saved bundle and a float32 cast": None,  # the same guard in a loaded model
}


@pytest.mark.parametrize("disguise", list(SEALED_DISGUISES))
def test_sealed_rows_are_refused_in_any_disguise(pipe_and_frame, tmp_path, disguise):
    """predict() matches sealed rows as the test lock does: in the precision a network reads (float32)."""
    pipe, frame = pipe_and_frame
    sealed = frame.loc[sealed_rows(pipe)].drop(columns="label")
    if SEALED_DISGUISES[disguise] is None:
        model, rows = nt.load(pipe.save(tmp_path / "m.nbtrain", run="mlp-1")), SEALED_DISGUISES["a float32 cast"](sealed)
    else:
        model, rows = pipe, SEALED_DISGUISES[disguise](sealed)
    with pytest.raises(LeakageError, match=rf"New rows belong to .*: (\d+) of {len(rows)} ") as caught:
        model.predict(rows)
    # Noise at float32's own precision moves a few values across a rounding step (README: what remains)
    assert int(re.search(r": (\d+) of", str(caught.value)).group(1)) >= 0.95 * len(rows)


def test_the_callers_frame_is_never_changed(pipe_and_frame, untouched):
    pipe, frame = pipe_and_frame
    rows = frame.loc[pipe.val.index[:6]].copy()
    rows["x1"] = rows["x1"].astype(object)
    rows.iloc[0, rows.columns.get_loc("x1")] = "?"
    rows.iloc[1, rows.columns.get_loc("x1")] = " 0.25 "
    rows.iloc[2, rows.columns.get_loc("x2")] = np.inf
    guard = untouched(rows)
    with pytest.warns(NbtrainWarning, match="treated as missing") as caught:
        pipe.predict(rows)
    guard.check()
    assert caught[0].filename == __file__  # the warning points at the caller's line


@pytest.mark.filterwarnings("ignore:Column 'x[12]' had no missing values")
def test_cleaning_repairs_are_applied_to_new_rows(pipe_and_frame):
    pipe, frame = pipe_and_frame
    rows = frame.loc[pipe.val.index[:4]]
    repaired = rows.assign(x1=rows["x1"].astype(object))
    repaired.iloc[0, repaired.columns.get_loc("x1")] = "n/a"                # a placeholder: missing
    repaired.iloc[1, repaired.columns.get_loc("x1")] = f" {float(rows['x1'].iloc[1])!r} "  # a number as text
    by_hand = rows.assign(x1=[np.nan, *rows["x1"].iloc[1:]])
    pd.testing.assert_frame_equal(pipe.predict(repaired), pipe.predict(by_hand))
    infinite = rows.assign(x2=[np.inf, *rows["x2"].iloc[1:]])
    with pytest.warns(NbtrainWarning, match=r"Column 'x2': 1 row with an infinite value, treated as missing"):
        pd.testing.assert_frame_equal(pipe.predict(infinite), pipe.predict(rows.assign(x2=[np.nan, *rows["x2"].iloc[1:]])))


def test_a_missing_column_is_an_error_naming_it(pipe_and_frame):
    pipe, frame = pipe_and_frame
    rows = frame.loc[pipe.val.index[:3]].rename(columns={"x2": "X2"})
    with pytest.raises(DataError, match=r"The new rows lack 1 column the model reads: \['x2'\]. Close names in your "
                                        r"data: 'x2' -> 'X2'\?. Expected the training columns \['x1', 'x2', 'color'\]"):
        pipe.predict(rows)


def test_an_extra_column_is_ignored_with_a_warning_or_refused_when_strict(pipe_and_frame):
    pipe, frame = pipe_and_frame
    rows = frame.loc[pipe.val.index[:3]].assign(extra=1)
    with pytest.warns(NbtrainWarning, match=r"Ignored 1 column the model was not trained on: \['extra'\]"):
        predicted = pipe.predict(rows)
    pd.testing.assert_frame_equal(predicted, pipe.predict(rows.drop(columns="extra")))
    with pytest.raises(DataError, match=r"strict=True and the new rows differ from training: Ignored 1 column"):
        pipe.predict(rows, strict=True)


def test_an_unseen_label_is_encoded_as_unseen_with_a_warning_or_refused_when_strict(pipe_and_frame):
    pipe, frame = pipe_and_frame
    rows = frame.loc[pipe.val.index[:3]].assign(color=["purple", "red", "blue"])
    with pytest.warns(NbtrainWarning, match=r"Column 'color': 1 row with a label not seen in training, e.g. "
                                            r"\['purple'\]: encoded as an unseen label"):
        predicted = pipe.predict(rows)
    assert len(predicted) == 3 and predicted.notna().all().all()
    with pytest.raises(DataError, match=r"strict=True .*a label not seen in training, e.g. \['purple'\]"):
        pipe.predict(rows, strict=True)


def test_text_in_a_numeric_column_is_an_error_naming_values_and_rows(pipe_and_frame):
    pipe, frame = pipe_and_frame
    rows = frame.loc[pipe.val.index[:3]].assign(x1=["abc", 1.5, "2"])
    label = rows.index[0]
    with pytest.raises(DataError, match=rf"Column 'x1' holds numbers in training \(float64\), but the new rows hold "
                                        rf"text that is not a number in 1 row: \['abc'\] \(rows \[{label}\]\)"):
        pipe.predict(rows)


def test_rows_in_other_shapes_and_no_rows(pipe_and_frame):
    pipe, frame = pipe_and_frame
    row = frame.loc[pipe.val.index[0]]
    one = pipe.predict(row.drop("label").to_dict())
    assert one.shape == (1, 4)
    np.testing.assert_allclose(one.iloc[0, 1:].astype(float), pipe.predict(frame.loc[[row.name]]).iloc[0, 1:].astype(float))
    assert len(pipe.predict([row.to_dict(), row.to_dict()])) == 2
    empty = pipe.predict(frame.iloc[:0])
    assert empty.empty and list(empty.columns) == ["prediction", "probability_a", "probability_b", "probability_c"]
    with pytest.raises(DataError, match=r"predict\(\) needs the new rows as a pandas DataFrame .*received a ndarray"):
        pipe.predict(np.zeros((2, 3)))


def test_predict_before_any_run_names_the_verb_to_call(workdir):
    pipe = nt.Pipeline(make_frame(), target="label", workdir=workdir)
    pipe.clean(), pipe.split(), pipe.preprocess()
    with pytest.raises(StageError, match=r"predict\(\) comes after fit\(\) or baseline\(\).*Call pipe.fit\(\) first"):
        pipe.predict(make_frame(n=5))


def test_the_default_run_is_the_one_test_evaluated(workdir):
    pipe, frame = trained(workdir, baseline=True)
    network = next(r for r in pipe._runs() if r.kind == "nn")
    pipe.test(run=network.name)
    rows = frame.loc[pipe.val.index[:5]]
    pd.testing.assert_frame_equal(pipe.predict(rows), pipe.predict(rows, run=network.name))
