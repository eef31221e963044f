"""Bundles of implicit-feedback models: `pipe.save(path)` on an InteractionPipeline, read back by `nbtrain.load(path)`.

The same file and promises as a table's bundle (nbtrain.bundle: one zip file, a manifest with versions
and checksums, nothing unpickled, foreign, damaged, truncated or newer files refused), with what a model
of users and items needs:

    manifest.json   as for tables, with "kind": "interactions", task "ranking"; "interactions": the user and
                    item columns and how many users and items train knew; "model": the network's class
                    (nbtrain's MatrixFactorization by default) and its config
    weights.pt      the best weights (a state_dict, read with torch's weights-only loader); the network is
                    rebuilt from its class's import path and config, as for tables
    users.npy       the user index map: row u of the user embedding is users.npy[u] (whole numbers or text,
    items.npy       the item index map      read with allow_pickle=False)
    sealed.npy      keys of the test (user, item) pairs still sealed when it was saved (uint64)

No train interaction is kept: the bundle knows which users and items exist, not who interacted with what.

`model.predict(pairs)`, a DataFrame of the user and item columns, gives `score` per pair (higher ranks
first) and `rank` (1 = first) among the pairs given for the same user, indexed like the pairs. A cold
start, a pair whose user or item train never saw, has no embedding: its score is NaN and its rank <NA>,
with a warning that counts them (`strict=True`: a DataError instead). The classical baselines are not
bundled (see interaction_predictor for why).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from nbtrain.bundle import model_spec, read_sealed, rebuild_model, sealed_bytes, weights_bytes
from nbtrain.data import fingerprint, inputs
from nbtrain.data.newdata import as_frame
from nbtrain.errors import ConfigError, DataError, NbtrainWarning
from nbtrain.kinds.ranking.bundle import ranked_frame
from nbtrain.kinds.ranking.data import InteractionCodes, group_rows
from nbtrain.kinds.ranking.pipeline import network_scores
from nbtrain.predictor import Predictor, kind_predictor, pick_run, user_stacklevel

_MEMBERS = {"weights.pt", "users.npy", "items.npy", "sealed.npy"}
_ID_KINDS = "biuU"   # numpy kinds of ids a .npy holds without pickle: booleans, whole numbers, text
# Why each classical baseline stays in its session (run config "library").
_NOT_BUNDLED = {
    "popularity": "its scores are the train split's item counts, the same for every user: a reference to compare "
                  "runs with, not a model of users to ship",
    "item_knn": "it scores a user from that user's own train interactions, so its bundle would carry the train "
                "interaction matrix, the training data a bundle never holds",
    "ease": "it scores a user from that user's own train interactions, so its bundle would carry the train "
            "interaction matrix, the training data a bundle never holds",
    "als": "its user and item factors come from the implicit package, and bundles rebuild networks of nbtrain's "
           "classes only; nbtrain's MatrixFactorization (pipe.fit()) is a model of the same form that ships",
}


@dataclass(repr=False)
class InteractionPredictor(Predictor):
    """A model of users and items with its index maps: `predict(pairs)` scores (user, item) pairs."""

    kind = "interactions"
    user: object = None
    item: object = None

    def predict(self, new_data, *, strict: bool = False) -> pd.DataFrame:
        """`score` and `rank` of (user, item) pairs (a DataFrame with the user and item columns, a dict or a
        list of row dicts), indexed like them; see the module docstring for cold starts. Pairs of the sealed
        test split are refused until pipe.test()."""
        frame = self._pairs(new_data)
        users, items = self.preprocessor.encode(frame)
        cold = (users < 0) | (items < 0)
        if cold.any():
            said = (f"{int(cold.sum())} of {len(frame)} pairs are cold starts, a user or item train never saw "
                    f"(e.g. rows {frame.index[cold][:5].tolist()}): a model of users and items has no embedding "
                    "for them")
            if strict:
                raise DataError(f"{said}. Drop those pairs, or call predict(strict=False) to score them NaN.")
            warnings.warn(f"{said}, so their score is NaN and their rank <NA>.", NbtrainWarning,
                          stacklevel=user_stacklevel())
        scores = np.full(len(frame), np.nan, dtype=np.float32)
        scores[~cold] = pair_scores(self.model, users[~cold], items[~cold])
        return ranked_frame(scores, frame.index, frame[self.user].to_numpy())

    def transform(self, new_data) -> tuple[np.ndarray, np.ndarray]:
        """The codes of (user, item) pairs, int64 each: what an exported model (see export) takes; -1 for a user
        or item train never saw, which the exported graph cannot score (leave those pairs out)."""
        return self.preprocessor.encode(self._pairs(new_data))

    def export(self, path, format: str = "onnx", *, sample=None, rtol: float = 1e-4, atol: float = 1e-5):
        """Write the network for serving (inputs `users` and `items`, int64 codes (batch,) from transform(pairs);
        output a score per pair), checked against this model on `sample` pairs (a DataFrame with the user and
        item columns; default random codes) (nbtrain.export)."""
        from nbtrain.export import export_model
        return export_model(self, path, format, sample=sample, rtol=rtol, atol=atol)

    def export_inputs(self, sample=None):
        """The exported graph's inputs and the pairs its check runs on (nbtrain.export.ExportInputs)."""
        from nbtrain.export import SAMPLE_ROWS, ExportInputs
        codes = self.preprocessor
        users, items = codes.encode(sample) if sample is not None else (np.zeros(0, np.int64),) * 2
        warm = (users >= 0) & (items >= 0)
        users, items = users[warm][:SAMPLE_ROWS], items[warm][:SAMPLE_ROWS]
        found = len(users) >= 2
        if not found:  # random codes: what matters is that the graph computes what the network does
            rng = np.random.default_rng(0)
            users, items = rng.integers(0, codes.n_users, SAMPLE_ROWS), rng.integers(0, codes.n_items, SAMPLE_ROWS)
        return ExportInputs(
            names=["users", "items"], arrays=(users.astype(np.int64), items.astype(np.int64)),
            dynamic=({0: "batch"}, {0: "batch"}),
            described=[f"users int64 (batch,): codes 0..{codes.n_users - 1} of {self.user!r}",
                       f"items int64 (batch,): codes 0..{codes.n_items - 1} of {self.item!r}"],
            sample="validation pairs" if found else "random pairs",
            metadata={"run": self.run.get("name"), "task": self.task, "user": self.user, "item": self.item,
                      "n_users": codes.n_users, "n_items": codes.n_items,
                      "output": "a score per (user, item) pair; higher ranks first",
                      "codes": "nbtrain.load(bundle).transform(pairs) makes them; -1 (a user or item train never "
                               "saw) has no embedding and must not be passed"})

    def _bundle_manifest(self) -> dict:
        return _manifest(self)

    def _bundle_members(self) -> dict[str, bytes]:
        return _members(self)

    def _pairs(self, new_data) -> pd.DataFrame:
        frame = as_frame(new_data)
        inputs.require_column(frame.columns, self.user, "user")
        inputs.require_column(frame.columns, self.item, "item")
        self._refuse_sealed(frame)
        return frame

    def _row_keys(self, frame: pd.DataFrame) -> np.ndarray:
        return fingerprint.combine(frame, [self.user, self.item])  # a pair is known by its user and item

    def _summary(self) -> list[str]:
        lines = super()._summary()
        lines[0] = (f"Run {self.run.get('name')!r} ({self.run.get('model')}) scoring interactions of {self.user!r} "
                    f"with {self.item!r}: ranking, higher scores first.")
        return lines

    def _reads(self) -> str:
        codes = self.preprocessor
        return (f"Reads pairs of {self.user!r} and {self.item!r}: {codes.n_users} users and {codes.n_items} items "
                "known from train; a pair with a user or item train never saw (a cold start) scores NaN.")

    def _columns(self) -> str:
        return "'score' and 'rank' (1 = first among the pairs given for the same user; NaN and <NA> for a cold start)"

    def _input_sections(self):
        return []


def pair_scores(model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Scores of (user, item) code pairs, in their order: a network's as test() computes them, or a classical
    baseline's (in its session)."""
    if not isinstance(model, torch.nn.Module):
        return model.score(users, items)
    data = group_rows((users, items), np.zeros(len(users)), users, pd.RangeIndex(len(users)), ("users", "items"))
    scores = np.empty(len(users), dtype=np.float32)
    if len(users):
        scores[data.order] = network_scores(model, data)
    return scores


def interaction_predictor(pipe, run=None, *, verb: str = "save", evidence: bool = False) -> InteractionPredictor:
    """The InteractionPredictor of one of an InteractionPipeline's runs (default as for predict). A classical
    baseline predicts in its session, but is not saved or exported: _NOT_BUNDLED says why."""
    chosen = pick_run(pipe, run, verb=verb)
    if chosen.kind == "baseline" and verb != "predict":
        library = chosen.config.get("library")
        why = _NOT_BUNDLED.get(library, "it is not a network")
        raise ConfigError(f"{verb}() writes networks of users and items; run {chosen.name!r} is the {library} "
                          f"baseline: {why}. Choose a network run (run='<name>').")
    return kind_predictor(InteractionPredictor, pipe, chosen, evidence=evidence, user=pipe.user, item=pipe.item)


def _manifest(predictor: InteractionPredictor) -> dict:
    codes = predictor.preprocessor
    info = {k: v for k, v in predictor.info.items() if k not in ("source", "path")}
    return {"kind": "interactions", "task": predictor.task, "target": None, "classes": None,
            "target_scale": list(predictor.target_scale), "run": predictor.run, "model": model_spec(predictor.model),
            "schema": {"user": predictor.user, "item": predictor.item},
            "interactions": {"user": predictor.user, "item": predictor.item, "n_users": codes.n_users,
                             "n_items": codes.n_items},
            "info": info, "evidence": predictor.evidence}


def _members(predictor: InteractionPredictor) -> dict[str, bytes]:
    codes = predictor.preprocessor
    return {"weights.pt": weights_bytes(predictor.model), "sealed.npy": sealed_bytes(predictor.sealed),
            "users.npy": _ids(codes.users_, predictor.user), "items.npy": _ids(codes.items_, predictor.item)}


def _ids(index: pd.Index, column) -> bytes:
    """An index map as .npy, without pickle: ids of whole numbers, booleans or text only."""
    values = index.to_numpy()
    if values.dtype.kind not in _ID_KINDS and pd.api.types.infer_dtype(values, skipna=False) == "string":
        values = values.astype(str)
    if values.dtype.kind not in _ID_KINDS:
        raise ConfigError(f"The ids of {column!r} are {pd.api.types.infer_dtype(values, skipna=False)} values "
                          f"({values.dtype}, e.g. {values[:3].tolist()}); a bundle stores ids as whole numbers or text "
                          f"(a .npy read without pickle). Convert the column first (df[{column!r}].astype(str)), "
                          "then split and train again.")
    out = io.BytesIO()
    np.save(out, values, allow_pickle=False)
    return out.getvalue()


# ---- loading ------------------------------------------------------------------------------------


def load_bundle(manifest: dict, members: dict[str, bytes], path, *, trust: bool = False) -> InteractionPredictor:
    """The InteractionPredictor of a checked bundle (nbtrain.bundle.load has read and checksummed its members)."""
    if set(members) != _MEMBERS:
        raise DataError(f"{str(path)!r}: a bundle of interactions holds {sorted(_MEMBERS)}; its manifest lists "
                        f"{sorted(members)[:5]}. The file was damaged or crafted; save the bundle again.")
    fields = _fields(manifest, path)
    if manifest["model"] is None:
        raise DataError(f"{str(path)!r}: its manifest names no network; a bundle of interactions holds one. The file "
                        "was damaged or crafted; save the bundle again.")
    codes = InteractionCodes(fields["user"], fields["item"])
    codes.users_ = _read_ids(members["users.npy"], "users.npy", fields["n_users"], path)
    codes.items_ = _read_ids(members["items.npy"], "items.npy", fields["n_items"], path)
    config = manifest["model"].get("config") or {}
    if config.get("n_users", fields["n_users"]) != fields["n_users"] or \
            config.get("n_items", fields["n_items"]) != fields["n_items"]:
        raise DataError(f"{str(path)!r}: its network has embeddings for {config.get('n_users')} users and "
                        f"{config.get('n_items')} items, its index maps {fields['n_users']} and {fields['n_items']}. "
                        "The file was damaged or crafted; save the bundle again.")
    model = rebuild_model(manifest["model"], members["weights.pt"], path, trust=trust)
    return InteractionPredictor(task=manifest["task"], target=None, classes=None,
                                target_scale=tuple(manifest["target_scale"]), run=manifest["run"], model=model,
                                preprocessor=codes, sealed=read_sealed(members["sealed.npy"], path),
                                user=fields["user"], item=fields["item"], evidence=manifest.get("evidence"),
                                info={**manifest["info"], "source": "bundle", "path": str(path)})


def _fields(manifest: dict, path) -> dict:
    fields = manifest.get("interactions")
    ok = isinstance(fields, dict) and all(isinstance(fields.get(k), (str, int)) for k in ("user", "item")) and \
        all(isinstance(fields.get(k), int) and not isinstance(fields.get(k), bool) and fields[k] >= 1
            for k in ("n_users", "n_items"))
    if not ok:
        raise DataError(f"{str(path)!r}: its manifest is malformed: 'interactions' should hold the user and item "
                        "columns and n_users and n_items (whole numbers >= 1). The file was damaged or crafted; save "
                        "the bundle again from the pipeline.")
    return fields


def _read_ids(data: bytes, name: str, count: int, path) -> pd.Index:
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{str(path)!r}: its {name} is damaged or not plain ids ({exc}). Save the bundle again.") \
            from exc
    index = pd.Index(values) if values.ndim == 1 and values.dtype.kind in _ID_KINDS else None
    if index is None or len(index) != count or not index.is_unique:
        raise DataError(f"{str(path)!r}: its {name} should hold {count} distinct ids (whole numbers or text, one "
                        f"per embedding row); it holds {values.dtype} values of shape {values.shape}. The file was "
                        "damaged or crafted; save the bundle again.")
    return index
