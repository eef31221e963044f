"""The TF-IDF baseline a transformer has to beat on text: n-gram counts, TF-IDF weights, a linear model.

Logistic regression for classes (liblinear's dual solver for two classes, fast on many sparse
columns; lbfgs with a multinomial loss for more), Ridge for numbers. On a few thousand texts it is
often within a few points of a fine-tuned transformer, in seconds, so a transformer run is judged
against it (TextPipeline.baseline).

tune=True (what pipe.baseline() does) searches, by cross-validation on the train texts only
(nbtrain.models.tuning), the settings a practitioner tries first, 50 of them:

- n-grams (NGRAMS): words, or words and word pairs, each with min_df 1 or 2 (a word in one text
  says little), or character 2-5-grams within words (robust to typos and word forms), min_df 2;
- sublinear tf (1 + log tf: a word said ten times is not ten times the evidence) or raw counts;
- the regularisation: C from 0.3 to 30 (Ridge: alpha from 0.03 to 3).

The train texts are counted once per kind of n-gram; within each fold, `Vocabulary` keeps the
n-grams of that fold's training texts with at least min_df of them, which is what a CountVectorizer
fitted on those texts would keep, so the folds never learn a word from their held-out texts. The
winner is refitted on all train texts as a plain CountVectorizer -> TfidfTransformer -> model.
tune=False fits the defaults: words and word pairs, min_df 1, sublinear tf, C=1 (alpha 1).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from nbtrain.models import tuning

MAX_FEATURES = 200_000
NGRAMS = {"words": {"analyzer": "word", "ngram_range": (1, 1)},
          "word pairs": {"analyzer": "word", "ngram_range": (1, 2)},
          "chars": {"analyzer": "char_wb", "ngram_range": (2, 5)}}
GRID = [{"vocabulary__ngrams": ["words", "word pairs"], "vocabulary__min_df": [1, 2]},
        {"vocabulary__ngrams": ["chars"], "vocabulary__min_df": [2]}]
STRENGTHS = {"model__C": [0.3, 1.0, 3.0, 10.0, 30.0], "model__alpha": [0.03, 0.1, 0.3, 1.0, 3.0]}
DEFAULTS = {"vocabulary__ngrams": "word pairs", "vocabulary__min_df": 1, "weights__sublinear_tf": True}


class TfidfBaseline:
    """TF-IDF n-grams and a linear model, fitted on the train texts (tuned there when `tune`)."""

    library = "sklearn"

    def __init__(self, task: str, text_col, *, n_classes: int | None = None, seed: int = 0, tune: bool = False):
        self.task, self.text_col, self.n_classes, self.seed, self.tune = task, text_col, n_classes, seed, tune
        self.estimator_name = "TF-IDF + " + ("Ridge" if task == "regression" else "LogisticRegression")
        self.config, self.notes = {}, []

    def fit(self, frame, y):
        texts, strength = frame[self.text_col].tolist(), self._strength()
        chosen = {**DEFAULTS, strength: 1.0}
        if self.tune:
            best, found = self._search(texts, y, chosen)
            chosen = best or chosen
            self.config, self.notes = {"tuning": found.config()}, [found.note()]
        self.model_ = self._pipeline(chosen).fit(texts, y)
        return self

    def predict(self, frame):
        """What the metrics read: values, P(positive) for binary, class probabilities for multiclass."""
        texts = frame[self.text_col].tolist()
        if self.task == "regression":
            return np.asarray(self.model_.predict(texts), dtype=float)
        probabilities = self.model_.predict_proba(texts)
        if self.task == "binary":
            return probabilities[:, 1]
        # classes absent from train get no column from scikit-learn; the metrics expect every class
        full = np.zeros((len(texts), self.n_classes or int(max(self.model_.classes_)) + 1))
        full[:, self.model_.classes_] = probabilities
        return full

    def _search(self, texts: list, y, defaults: dict) -> tuple:
        """The best settings by cross-validation on these (train) texts, and the Tuning record."""
        from scipy import sparse
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.pipeline import Pipeline
        words = CountVectorizer(**NGRAMS["word pairs"])
        chars = CountVectorizer(**NGRAMS["chars"])
        counts = sparse.hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsc()
        pairs = np.arange(len(words.vocabulary_))
        single = np.array([i for term, i in words.vocabulary_.items() if " " not in term], dtype=int)
        blocks = {"words": np.sort(single), "word pairs": pairs, "chars": len(pairs) + np.arange(len(chars.vocabulary_))}
        model = Pipeline([("vocabulary", Vocabulary(blocks)), ("weights", TfidfTransformer()), ("model", self._model())])
        grid = [{**part, "weights__sublinear_tf": [True, False], self._strength(): STRENGTHS[self._strength()]}
                for part in GRID]
        return tuning.grid_search(model, grid, counts, y, task=self.task, seed=self.seed, defaults=defaults)

    def _pipeline(self, settings: dict):
        """CountVectorizer -> TfidfTransformer -> the model, with these (search-named) settings."""
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
        from sklearn.pipeline import Pipeline
        counts = CountVectorizer(**NGRAMS[settings["vocabulary__ngrams"]], min_df=settings["vocabulary__min_df"],
                                 max_features=MAX_FEATURES)
        model = self._model().set_params(**{self._strength().split("__")[1]: settings[self._strength()]})
        return Pipeline([("counts", counts), ("weights", TfidfTransformer(sublinear_tf=settings["weights__sublinear_tf"])),
                         ("model", model)])

    def _model(self):
        from sklearn.linear_model import LogisticRegression, Ridge
        if self.task == "regression":
            return Ridge()
        if self.task == "binary":  # the dual problem has one variable per text: fast with many n-gram columns
            return LogisticRegression(solver="liblinear", dual=True, max_iter=1000, random_state=self.seed)
        return LogisticRegression(max_iter=2000, random_state=self.seed)

    def _strength(self) -> str:
        """The regularisation setting's name: Ridge's alpha, or logistic regression's C."""
        return "model__alpha" if self.task == "regression" else "model__C"


class Vocabulary(BaseEstimator, TransformerMixin):
    """Keeps the columns of one block of n-gram counts that the fitted rows hold in at least `min_df` rows,
    at most `max_features` of them by total count: CountVectorizer's vocabulary rule, applied to counts
    made once for all train texts, so each fold learns its vocabulary from its own training texts only."""

    def __init__(self, blocks: dict, ngrams: str = "word pairs", min_df: int = 1, max_features: int = MAX_FEATURES):
        self.blocks, self.ngrams, self.min_df, self.max_features = blocks, ngrams, min_df, max_features

    def fit(self, X, y=None):
        columns = np.asarray(self.blocks[self.ngrams])
        block = X[:, columns]
        documents = np.asarray((block > 0).sum(axis=0)).ravel()
        kept = columns[documents >= self.min_df]
        if len(kept) > self.max_features:  # the most frequent ones, like CountVectorizer
            totals = np.asarray(X[:, kept].sum(axis=0)).ravel()
            kept = np.sort(kept[np.argsort(-totals, kind="stable")[:self.max_features]])
        self.columns_ = kept
        return self

    def transform(self, X):
        return X[:, self.columns_]
