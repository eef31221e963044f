"""TextPipeline: classify (or regress on) texts with a pretrained transformer and its own tokenizer.

    pipe = nt.Pipeline(reviews, target="score", kind="text", text_col="review")
    pipe.clean(); pipe.split(); pipe.preprocess()      # MiniLM's tokenizer by default
    pipe.baseline()                                    # TF-IDF + logistic regression, the bar to beat
    pipe.fit()                                         # fine-tunes the model the tokenizer belongs to
    pipe.test()

Input: a DataFrame with one text column (`text_col`, found by itself when there is one) and the
target. Other columns are ignored, and the cleaning report says so: the model reads only the text.
They are also left out of the row fingerprints, so the test lock knows a row by its text and label.

What differs from tables, and why:

- clean(): rows without a label or a text, blank texts, texts that are not strings, and exact
  duplicate texts (one copy kept; every copy dropped when the copies disagree on the label).
- preprocess(model=None, max_length="auto"): loads the tokenizer of the model that will be trained
  (None: the offline all-MiniLM-L6-v2), fingerprints it, learns max_length from the train texts
  and tokenizes train and validation (nbtrain.kinds.text.data).
- fit(): the model must carry the same tokenizer, compared by content fingerprint, or LeakageError.
  The defaults are the transformer fine-tuning recipe (see _fit_defaults).
- `n_inputs` is max_length (the width of the token id matrix); `feature_names` is [] and
  `cardinalities` {}: there are no feature columns.
- save() writes a bundle with the transformer's files and its tokenizer (nbtrain.kinds.text.bundle);
  export() writes ONNX (or torch.export) with the tokenizer beside it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from nbtrain.data import fingerprint, inputs
from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainWarning, StageError
from nbtrain.kinds import detect
from nbtrain.kinds.text.data import (LENGTH_QUANTILE, TextCleaningReport, TextPreprocessor, TextPreprocessReport,
                                     clean_texts, length_cap, new_texts, text_preprocess_report)
from nbtrain.pipeline import Pipeline
from nbtrain.training.run import Run
from nbtrain.training.runs import choose_run, fit_baseline, prediction_frame

# AdamW lr for fine-tuning: BERT-base and larger take 5e-5 (Devlin et al. 2019 searched 2e-5..5e-5);
# compact encoders (hidden size <= 512, like MiniLM-L6's 384) are fine-tuned best with larger steps:
# the small BERTs of Turc et al. 2019 were tuned over 3e-5..3e-4 and mostly picked 1e-4 or more.
LR_LARGE, LR_COMPACT, COMPACT_WIDTH = 5e-5, 1e-4, 512


class TextPipeline(Pipeline):
    """A Pipeline over a text column; see the module docstring for what differs from tables."""

    def __init__(self, data, target, *, text_col=None, kind="auto", **options):
        if kind not in ("auto", "text"):
            raise ConfigError(f"TextPipeline is for kind='text'; received kind={kind!r}. Use nt.Pipeline(...) "
                              "to get the class of another kind.")
        super().__init__(data, target, kind="text", **options)
        self.text_col = _text_column(self._data, self._features, text_col)
        self.ignored_columns = [c for c in self._features if c != self.text_col]
        self._features = [self.text_col]
        # rows are known by their text and label alone: the ignored columns do not reach the model
        self._feature_hash = fingerprint.combine(self._data, self._features)
        others = [c for c in (target, self.time_col, self.group_col) if c is not None]
        self._row_hash = fingerprint.mix(self._feature_hash, fingerprint.combine(self._data, others))
        self.fingerprint = fingerprint.dataset_fingerprint(self._row_hash, [self.text_col, *others])

    # ---- verbs -----------------------------------------------------------------------------

    def clean(self) -> TextCleaningReport:
        """Drop rows without a label or text, blank texts, texts that are not strings, and duplicate
        texts (nbtrain.kinds.text.data.clean_texts says which copy stays)."""
        required = tuple(c for c in (self.time_col, self.group_col) if c is not None)
        self._frame, positions, report = clean_texts(self._data, self.text_col, self.target, required,
                                                     self.ignored_columns)
        if report.rows_out == 0:
            raise DataError(f"No row is left after cleaning: {report.rows_in} rows in, none with both a text in "
                            f"{self.text_col!r} and a target. Check the column names and their contents.")
        self._clean_row_hash = self._row_hash[positions]
        self._clean_feature_hash = self._feature_hash[positions]
        self.cleaning_ = report
        self._reset_to("cleaned")
        return report

    def preprocess(self, model=None, *, max_length="auto", length_quantile: float = LENGTH_QUANTILE
                   ) -> TextPreprocessReport:
        """Tokenize train and validation texts with the tokenizer of the model to be trained.

        `model`: None (the offline all-MiniLM-L6-v2), a folder or Hugging Face name, or a model that
        carries its tokenizer (nt.models.text(...)). `max_length`: "auto" (the `length_quantile` of
        the train texts' token counts, rounded up to a multiple of 8, capped at the model's limit)
        or a number of tokens.
        """
        self._require_split("preprocess() learns max_length from the texts; before split() it would learn "
                            "from the validation and test texts too.")
        tokenizer, source, config = _tokenizer_of(model)
        pre = TextPreprocessor(tokenizer, self.text_col, name_or_path=source, max_length=max_length,
                               length_quantile=length_quantile, cap=length_cap(tokenizer, config))
        train, val = self._rows("train"), self._rows("val")
        pre.fit(train[self.text_col])
        self._encoder_width = getattr(config, "hidden_size", None)
        self.preprocessor_ = pre
        self._train = pre.split_data(train, self._encode_target(train[self.target]))
        self._val = pre.split_data(val, self._encode_target(val[self.target]))
        self._reset_to("preprocessed")
        return text_preprocess_report(pre, self._train, self._val, val[self.text_col])

    def fit(self, model=None, **options) -> Run:
        """Fine-tune `model` (default: the model whose tokenizer preprocess() used) on the train texts.

        A model carrying another tokenizer is refused with a LeakageError: its ids would mean other
        words. Keywords: as Pipeline.fit; this kind's defaults are in _fit_defaults.
        """
        self._require("preprocessed", "fit")
        if model is not None:
            self._check_model(model, "fit()")
        return super().fit(model, **options)

    def lr_find(self, model=None, **options):
        self._require("preprocessed", "lr_find")
        if model is not None:
            self._check_model(model, "lr_find()")
        return super().lr_find(model, **options)

    def baseline(self, *, library: str = "sklearn", tune: bool = True) -> Run:
        """TF-IDF n-grams, then logistic regression (Ridge for regression), fitted on the train texts and
        scored on validation like every run: the bar a transformer has to clear. `tune`: choose the
        n-grams, min_df, sublinear tf and C by cross-validation on the train texts only
        (nbtrain.kinds.text.baseline lists the 50 settings); False fits the defaults."""
        from nbtrain.kinds.text.baseline import TfidfBaseline
        self._require_split("baseline() fits a model (and a TF-IDF vocabulary); before split() it would learn "
                            "from the validation and test rows too.")
        if library != "sklearn":
            raise ConfigError(f"The text baseline is scikit-learn's TF-IDF + linear model; received "
                              f"library={library!r}. Use the default.")
        train, val = self._rows("train"), self._rows("val")
        run = fit_baseline(TfidfBaseline(self.task, self.text_col, n_classes=self.n_outputs, seed=self.seed,
                                         tune=tune),
                           train, self._encode_target(train[self.target]), val,
                           self._encode_target(val[self.target]), task=self.task, n_classes=self.n_outputs,
                           name=f"baseline-tfidf-{self.split_id[:6]}")
        self._log_run(run, None)
        return run

    def predict(self, new_data, run=None, *, strict: bool = False) -> pd.DataFrame:
        """A run's predictions for new texts (a DataFrame with the text column, a dict or a list of
        row dicts), indexed like them. Texts of the sealed test split are refused until test().
        Missing or non-string texts are refused (DataError): there is nothing to read. `strict` is
        accepted for symmetry with tables; text has no labels or columns to conform."""
        from nbtrain.predictor import default_run
        frame = new_texts(new_data, self.text_col)
        runs = self._runs()
        if not runs and not isinstance(run, Run):
            raise StageError(f"predict() comes after fit() or baseline(); this pipeline is at stage {self._stage!r}. "
                             "Call pipe.fit() first.")
        chosen = default_run(self, runs) if run is None else choose_run(runs, run, self.task)
        self._refuse_sealed(frame)
        if frame.empty:
            return prediction_frame(np.zeros((0, self.n_outputs) if self.task == "multiclass" else (0,)),
                                    frame.index, self.task, self.classes if self.task != "regression" else None)
        return prediction_frame(self._predict(chosen, frame), frame.index, self.task,
                                self.classes if self.task != "regression" else None, chosen.config.get("decision"))

    def save(self, path, run=None):
        """Write a fine-tuned run as one bundle file with its tokenizer, max length and label names, which
        nbtrain.load(path) reads in any process (nbtrain.kinds.text.bundle has the format)."""
        from nbtrain.kinds.text.bundle import text_predictor
        return text_predictor(self, run, verb="save", evidence=True).save(path)

    def export(self, path, format: str = "onnx", run=None, *, rtol: float = 1e-4, atol: float = 1e-5):
        """Write a fine-tuned run for serving (input_ids and attention_mask with dynamic batch and sequence axes)
        and its tokenizer beside it, checked on the validation texts (nbtrain.kinds.text.bundle, nbtrain.export)."""
        from nbtrain.kinds.text.bundle import text_predictor
        return text_predictor(self, run, verb="export").export(path, format, sample=self._rows("val"), rtol=rtol,
                                                               atol=atol)

    def status(self):
        report = super().status()
        if hasattr(self, "preprocessor_"):
            pre = self.preprocessor_
            report.guards["tokenizer"] = (f"{pre.tokenizer_name_}, fingerprint {pre.fingerprint_[:12]}: a model "
                                          "with another tokenizer is refused (LeakageError)")
        return report

    # ---- what the model sees ---------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        """max_length: the width of the token id matrix (each batch is cut to its longest text)."""
        self._require("preprocessed", "n_inputs")
        return self.preprocessor_.max_length_

    # ---- hooks of the base class -------------------------------------------------------------

    def _default_model(self):
        from nbtrain.kinds.text.models import TextModel
        source, n_outputs, pre = self.preprocessor_.name_or_path, self.n_outputs, self.preprocessor_

        def build():
            model = TextModel(source, n_outputs)
            pre.check_model(model, "building the default model")  # the folder may have changed since
            return model
        return build

    def _fit_defaults(self) -> dict:
        """The transformer fine-tuning recipe: a small lr with linear warmup over the first 10% of steps
        and linear decay to 0, weight decay 0.01, gradients clipped at norm 1, batches of 16, a few
        epochs (the pretrained encoder needs little), and patience 2."""
        width = getattr(self, "_encoder_width", None)
        lr = LR_COMPACT if width is not None and width <= COMPACT_WIDTH else LR_LARGE
        return {"lr": lr, "schedule": "linear", "warmup": 0.1, "weight_decay": 0.01, "batch_size": 16,
                "epochs": 4, "patience": 2, "clip_grad": 1.0}

    def _check_model(self, model, verb: str) -> None:
        if not self.preprocessor_.check_model(model, f"in {verb}"):
            warnings.warn(f"The {type(model).__name__} passed to {verb} carries no tokenizer (no `tokenizer` "
                          "attribute), so nbtrain cannot check that it reads the ids of "
                          f"{self.preprocessor_.tokenizer_name_}. Give it that tokenizer as model.tokenizer.",
                          NbtrainWarning, stacklevel=3)

    def _refuse_sealed(self, frame: pd.DataFrame) -> None:
        """Texts of the test split that no evaluation has opened yet: predicting them is a look at it."""
        hit = np.isin(fingerprint.combine(frame, [self.text_col]), self._sealed_feature_hashes())
        if hit.any():
            raise LeakageError(f"New rows hold texts of this pipeline's test split, which stays sealed until "
                               f"pipe.test(): {int(hit.sum())} of {len(frame)} (e.g. rows "
                               f"{frame.index[hit][:5].tolist()}). A prediction on them is a look at the test set "
                               "by another door. Call pipe.test() first (once), or drop those rows.")


def _text_column(frame: pd.DataFrame, features: list, text_col):
    """The column holding the text: as given, the only feature column, or the only one reading as prose."""
    if text_col is not None:
        inputs.require_column(frame.columns, text_col, "text_col")
        if text_col not in features:
            raise ConfigError(f"text_col={text_col!r} is also the target, time or group column; name the column "
                              "that holds the texts.")
        return text_col
    if len(features) == 1:
        return features[0]
    prose = [c for c in features if detect.is_text_column(frame[c])]
    if len(prose) == 1:
        return prose[0]
    found = f"the columns {prose} all read as text" if prose else "none of them reads as free text"
    raise ConfigError(f"Which column holds the text? The data has {len(features)} feature columns {features} and "
                      f"{found}. Pass text_col='...'.")


def _tokenizer_of(model) -> tuple:
    """(tokenizer, name_or_path for the default model, transformers config or None) of what preprocess got."""
    from nbtrain.kinds.text.models import load_config, load_tokenizer
    if model is None or isinstance(model, str) or hasattr(model, "__fspath__"):
        tokenizer, _ = load_tokenizer(model)
        return tokenizer, None if model is None else str(model), load_config(model)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(f"preprocess(model=...) needs None, a model folder or name, or a model that carries its "
                          f"tokenizer (nt.models.text(...)); received a {type(model).__name__} without one.")
    config = getattr(model, "config", None)  # nt.models.text: {"name_or_path": ..., "n_outputs": ...}
    source = config.get("name_or_path") if isinstance(config, dict) else None
    return tokenizer, source, getattr(getattr(model, "backbone", None), "config", None)
