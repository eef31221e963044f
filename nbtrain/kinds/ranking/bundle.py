"""Bundles of ranking models of (query, document) features: `pipe.save(path)` on a RankingPipeline, read
back by `nbtrain.load(path)`.

A ranking network reads a table's features, so its bundle is a table's (nbtrain.bundle: one zip file,
a manifest with versions and checksums, nothing unpickled, foreign, damaged, truncated or newer files
refused) with "kind": "ranking" and "ranking": the query column:

    manifest.json        as for tables, task "ranking", no classes; "ranking": {"group_col": ...}
    weights.pt           the network's best weights (the tabular MLP, one output: a score per row)
    preprocessor.skops   the feature preprocessing fitted on the train queries (skops, no pickle)
    baseline.skops       for the tree baseline (pointwise regression of the relevance), the fitted trees instead
    sealed.npy           keys of the test rows still sealed when it was saved (uint64)

`model.predict(rows)` gives, indexed like the rows, `score` (higher ranks first) and `rank` (1 = first)
within each query of the query column, or among all the rows given when they have no query column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbtrain.bundle_safety import check_table_members
from nbtrain.data.preprocess import Arrays
from nbtrain.errors import DataError
from nbtrain.predictor import Predictor, kind_predictor, load_table, pick_run, pipeline_schema, sealed_hashes


@dataclass(repr=False)
class RankingPredictor(Predictor):
    """A ranking model of (query, document) features: `predict(rows)` scores and ranks them per query."""

    kind = "ranking"
    group_col: object = None

    def predict(self, new_data, *, strict: bool = False) -> pd.DataFrame:
        """`score` and `rank` (1 = first) of new (query, document) rows, indexed like them: ranked within each
        query of the query column, or all together without that column. The features are repaired and
        preprocessed as a table's (nbtrain.data.newdata); `strict=True` makes the repairs errors."""
        return super().predict(new_data, strict=strict)

    def _bundle_manifest(self) -> dict:
        return {**super()._bundle_manifest(), "kind": "ranking", "ranking": {"group_col": self.group_col}}

    def _prediction_frame(self, outputs: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
        groups = frame[self.group_col].to_numpy() if self.group_col in frame.columns else None
        return ranked_frame(outputs, frame.index, groups)

    def _task_phrase(self) -> str:
        return f"ranking, a score per row, ranked within each query of {self.group_col!r}"

    def _columns(self) -> str:
        return (f"'score' (higher ranks first) and 'rank' (1 = first within its {self.group_col!r}; all rows "
                "together when that column is absent)")


def ranked_frame(scores: np.ndarray, index: pd.Index, groups=None) -> pd.DataFrame:
    """`score` and `rank` (1 = first; ties by order, as test reports rank) per group (None: all rows one group).
    A NaN score (a cold start, nbtrain.kinds.ranking.interactions_bundle) has rank <NA> and takes no place."""
    frame = pd.DataFrame({"score": scores}, index=index)
    keys = np.zeros(len(frame), dtype=np.int64) if groups is None else pd.factorize(groups, use_na_sentinel=False)[0]
    ranks = pd.Series(scores, dtype=float).groupby(keys).rank(ascending=False, method="first").to_numpy()
    frame["rank"] = ranks.astype(np.int64) if not np.isnan(ranks).any() else pd.array(ranks).astype("Int64")
    return frame


def ranking_predictor(pipe, run=None, *, verb: str = "save", network: bool = False,
                      evidence: bool = False) -> RankingPredictor:
    """The RankingPredictor of one of a RankingPipeline's runs (default as for predict): the network, or with
    `network=False` the tree baseline too (its trees are bundled as a table's are, with skops)."""
    chosen = pick_run(pipe, run, verb=verb, network=network)
    schema = pipeline_schema(pipe)
    return kind_predictor(RankingPredictor, pipe, chosen, evidence=evidence, schema=schema,
                          sealed=sealed_hashes(pipe, schema), group_col=pipe.group_col)


def validation_arrays(pipe) -> Arrays:
    """The validation rows' network inputs, for export's check."""
    val = pipe._val
    X = val.inputs[0]
    codes = val.inputs[1] if len(val.inputs) > 1 else np.zeros((len(X), 0), dtype=np.int64)
    return Arrays(X=X, codes=codes, y=np.zeros(len(X), dtype=np.float32), index=None)


# ---- loading ------------------------------------------------------------------------------------


def load_bundle(manifest: dict, members: dict[str, bytes], path, *, trust: bool = False) -> RankingPredictor:
    """The RankingPredictor of a checked bundle (nbtrain.bundle.load has read and checksummed its members)."""
    check_table_members(manifest, path)
    fields = manifest.get("ranking")
    if not isinstance(fields, dict) or not isinstance(fields.get("group_col"), (str, int)) \
            or isinstance(fields.get("group_col"), bool):
        raise DataError(f"{str(path)!r}: its manifest is malformed: 'ranking' should hold the query column "
                        "(group_col). The file was damaged or crafted; save the bundle again from the pipeline.")
    return load_table(manifest, members, path, trust=trust, cls=RankingPredictor, group_col=fields["group_col"])
