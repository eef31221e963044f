"""Bundles of text models: `pipe.save(path)` on a TextPipeline, read back by `nbtrain.load(path)`.

The same file and promises as a table's bundle (nbtrain.bundle: one zip file, a manifest with
versions and checksums, nothing unpickled, foreign, damaged, truncated or newer files refused), with
the members a fine-tuned transformer needs instead of the tabular preprocessing:

    manifest.json   as for tables, with "kind": "text" and "text": the text column, the max length
                    learned from the train texts, the tokenizer's content fingerprint and its name
    model/...       the transformer as `save_pretrained` writes it (config.json, model.safetensors)
                    and its tokenizer's files (tokenizer.json, vocab.txt, tokenizer_config.json, ...)
    sealed.npy      hashes of the test texts still sealed when it was saved (uint64, no pickle)

Loading builds nbtrain's TextModel from those files with transformers (local files only, never the
hub, no remote code) and checks that the tokenizer read back has the fingerprint the texts were
encoded with. The weights are read from safetensors, which holds tensors only; a member of any other
kind than JSON, text, safetensors or a SentencePiece model (a pickled `.bin`, a `.py` file) is refused.
Only nbtrain's own TextModel is bundled: a text model of your own keeps its checkpoint (run.checkpoint).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nbtrain.bundle import read_sealed, sealed_bytes
from nbtrain.data import fingerprint
from nbtrain.errors import ConfigError, DataError
from nbtrain.kinds.text.data import TextPreprocessor, length_cap, new_texts, tokenizer_fingerprint
from nbtrain.predictor import Predictor, kind_predictor, pick_run

_MODEL = ("nbtrain.kinds.text.models", "TextModel")
_OLD_MODULES = ("nbtrain.models.text",)  # where bundles saved before the move name the class
_FOLDER = "model/"
_FILE = re.compile(r"^model/[A-Za-z0-9][A-Za-z0-9_.-]*\.(json|txt|safetensors|model)$")
_TEXT_PACKAGES = ("transformers", "tokenizers", "safetensors")


@dataclass(repr=False)
class TextPredictor(Predictor):
    """A fine-tuned text model, its tokenizer and max length: `predict(new_data)` reads the text column."""

    kind = "text"
    text_col: object = None

    def predict(self, new_data, *, strict: bool = False) -> pd.DataFrame:
        """Predictions for new texts (a DataFrame with the text column, a dict or a list of row dicts),
        indexed like them, as the pipeline's predict() gives them. `strict`: accepted for symmetry."""
        from nbtrain.training.runs import prediction_frame
        frame = new_texts(new_data, self.text_col)
        self._refuse_sealed(frame)
        return prediction_frame(self._outputs(frame), frame.index, self.task, self.classes, self.run.get("decision"))

    def transform(self, new_data):
        raise ConfigError("transform() makes the inputs of a tabular network; a text model reads token ids: "
                          "model.preprocessor.split_data(frame) makes them (ids and lengths).")

    def export(self, path, format: str = "onnx", *, sample=None, rtol: float = 1e-4, atol: float = 1e-5):
        """Write the transformer and its head for serving (inputs input_ids and attention_mask, dynamic batch and
        sequence axes), checked against this model on `sample` texts (a DataFrame with the text column; default a
        few sentences), and its tokenizer beside it in `<name>.tokenizer/` (nbtrain.export)."""
        from nbtrain.export import export_model
        report = export_model(self, path, format, sample=sample, rtol=rtol, atol=atol)
        folder = _save_tokenizer(self.preprocessor.tokenizer, report.path)
        report.notes.append(f"Tokenizer: {folder} (AutoTokenizer.from_pretrained(folder)); encode with truncation at "
                            f"{self.preprocessor.max_length_} tokens, as this model was trained.")
        return report

    def export_inputs(self, sample=None):
        """The exported graph's inputs and the texts its check runs on (nbtrain.export.ExportInputs)."""
        from nbtrain.export import SAMPLE_ROWS, ExportInputs
        rows = sample if sample is not None else pd.DataFrame({self.text_col: _SAMPLE_TEXTS})
        data = self.preprocessor.split_data(new_texts(rows, self.text_col).iloc[:SAMPLE_ROWS])
        width = max(1, int(data.lengths.max()))
        mask = (np.arange(width)[None, :] < data.lengths[:, None]).astype(np.int64)
        pre = self.preprocessor
        return ExportInputs(
            names=["input_ids", "attention_mask"], arrays=(np.ascontiguousarray(data.ids[:, :width]), mask),
            dynamic=({0: "batch", 1: "sequence"}, {0: "batch", 1: "sequence"}), limits={"sequence": pre.max_length_},
            described=[f"input_ids int64 (batch, sequence <= {pre.max_length_})", "attention_mask int64 (batch, sequence)"],
            sample="validation texts" if sample is not None else "sample texts",
            metadata={"run": self.run.get("name"), "task": self.task, "classes": self.classes, "target": self.target,
                      "tokenizer": pre.tokenizer_name_, "tokenizer_fingerprint": pre.fingerprint_,
                      "max_length": pre.max_length_, "inputs": ["input_ids", "attention_mask"]})

    def _bundle_manifest(self) -> dict:
        return _manifest(self)

    def _bundle_members(self) -> dict[str, bytes]:
        return _members(self)

    def _row_keys(self, frame: pd.DataFrame) -> np.ndarray:
        return fingerprint.combine(frame, [self.text_col])  # a text row is known by its text (TextPipeline)

    def _reads(self) -> str:
        pre = self.preprocessor
        return (f"Reads the text column {self.text_col!r} with the tokenizer {pre.tokenizer_name_} (fingerprint "
                f"{pre.fingerprint_[:12]}), up to {pre.max_length_} tokens (longer texts are cut).")

    def _input_sections(self):
        return []


_SAMPLE_TEXTS = ["Fine.", "The delivery was late, but the food was good.", "Never again: cold, soggy and expensive.",
                 "A short one.", "It was exactly what the description promised, and it arrived early too.",
                 "ok", "Terrible.", "I would order this again for friends and family without a second thought."]


def _save_tokenizer(tokenizer, exported: Path) -> Path:
    """The tokenizer's files in `<exported name>.tokenizer/` beside the exported model, replaced whole."""
    import shutil
    from nbtrain.files import io_error
    folder = exported.with_suffix(".tokenizer")
    temp = exported.parent / f".{folder.name}.{os.getpid()}.tmp"
    try:
        shutil.rmtree(temp, ignore_errors=True)
        tokenizer.save_pretrained(temp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temp, folder)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise io_error(folder, exc, "writing the tokenizer beside the export") from exc
    return folder


def text_predictor(pipe, run=None, *, verb: str = "save", evidence: bool = False) -> TextPredictor:
    """The TextPredictor of one of a TextPipeline's fine-tuned runs (default as for predict)."""
    chosen = pick_run(pipe, run, verb=verb)
    if chosen.kind == "baseline" or tuple(_class_path(chosen.model)) != _MODEL:
        what = "the TF-IDF baseline" if chosen.kind == "baseline" else f"a {type(chosen.model).__name__}"
        raise ConfigError(f"{verb}() handles nbtrain's TextModel (nt.models.text); run {chosen.name!r} "
                          f"is {what}. Choose a fine-tuned run (run='<name>'), or keep this one's checkpoint "
                          "(run.checkpoint) and predict with pipe.predict(...) in this session.")
    return kind_predictor(TextPredictor, pipe, chosen, evidence=evidence, packages=_text_packages(),
                          text_col=pipe.text_col)


def _class_path(model) -> tuple[str, str]:
    return type(model).__module__, type(model).__qualname__


def _text_packages() -> dict:
    import importlib.metadata
    found = {}
    for name in _TEXT_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _manifest(predictor: TextPredictor) -> dict:
    pre, model = predictor.preprocessor, predictor.model
    info = {k: v for k, v in predictor.info.items() if k not in ("source", "path")}
    return {"kind": "text", "task": predictor.task, "target": predictor.target, "classes": predictor.classes,
            "target_scale": list(predictor.target_scale), "run": predictor.run,
            "model": {"module": _MODEL[0], "qualname": _MODEL[1], "config": dict(model.config)},
            "schema": {"text_col": predictor.text_col},
            "text": {"text_col": predictor.text_col, "max_length": int(pre.max_length_),
                     "tokenizer_fingerprint": pre.fingerprint_, "tokenizer": pre.tokenizer_name_},
            "info": info, "evidence": predictor.evidence}


def _members(predictor: TextPredictor) -> dict[str, bytes]:
    """The transformer and its tokenizer as save_pretrained writes them (safetensors: tensors, no pickle)."""
    members = {"sealed.npy": sealed_bytes(predictor.sealed)}
    from nbtrain.kinds.text.models import _quiet, _transformers
    with tempfile.TemporaryDirectory() as folder, _quiet(_transformers()):  # no progress bar in the cell
        predictor.model.backbone.save_pretrained(folder, safe_serialization=True)
        predictor.preprocessor.tokenizer.save_pretrained(folder)
        for file in sorted(Path(folder).iterdir()):
            name = _FOLDER + file.name
            if file.is_file() and _FILE.match(name):
                members[name] = file.read_bytes()
    return members


# ---- loading ------------------------------------------------------------------------------------


def load_bundle(manifest: dict, members: dict[str, bytes], path: Path, *, trust: bool = False) -> TextPredictor:
    """The TextPredictor of a checked bundle (nbtrain.bundle.load has read and checksummed its members)."""
    text = _text_fields(manifest, path)
    files = _model_files(members, path)
    model = _rebuild(manifest, files, path)
    found = tokenizer_fingerprint(model.tokenizer)
    if found != text["tokenizer_fingerprint"]:
        raise DataError(f"{str(path)!r}: its tokenizer's files read back as fingerprint {found[:12]}, but the model "
                        f"was trained on texts encoded with {text['tokenizer_fingerprint'][:12]}: the ids would mean "
                        "other tokens. The file was damaged or crafted; save the bundle again from the pipeline.")
    pre = TextPreprocessor(model.tokenizer, text["text_col"], max_length=text["max_length"],
                           cap=max(text["max_length"], length_cap(model.tokenizer)))
    pre.fingerprint_, pre.tokenizer_name_, pre.max_length_ = found, text["tokenizer"], text["max_length"]
    return TextPredictor(task=manifest["task"], target=manifest["target"], classes=manifest["classes"],
                         target_scale=tuple(manifest["target_scale"]), run=manifest["run"], model=model,
                         preprocessor=pre, sealed=read_sealed(members["sealed.npy"], path),
                         text_col=text["text_col"], evidence=manifest.get("evidence"),
                         info={**manifest["info"], "source": "bundle", "path": str(path)})


def _text_fields(manifest: dict, path: Path) -> dict:
    text = manifest.get("text")
    ok = isinstance(text, dict) and isinstance(text.get("text_col"), (str, int)) and \
        isinstance(text.get("max_length"), int) and not isinstance(text.get("max_length"), bool) and \
        text["max_length"] >= 2 and isinstance(text.get("tokenizer_fingerprint"), str) and \
        isinstance(text.get("tokenizer"), str)
    if not ok:
        raise DataError(f"{str(path)!r}: its manifest is malformed: 'text' should hold text_col, max_length (a whole "
                        "number >= 2), tokenizer_fingerprint and tokenizer. The file was damaged or crafted; save "
                        "the bundle again from the pipeline.")
    return text


def _model_files(members: dict[str, bytes], path: Path) -> dict[str, bytes]:
    """The model/ members by file name; anything but sealed.npy and plain model files is refused."""
    unexpected = sorted(name for name in members if name != "sealed.npy" and not _FILE.match(name))
    if unexpected or "sealed.npy" not in members:
        raise DataError(f"{str(path)!r}: a text bundle holds sealed.npy and model/ files of JSON, text, safetensors or "
                        f"SentencePiece models only; found {unexpected[:5] or 'no sealed.npy'}. A pickled or code "
                        "file is never loaded: the file was damaged or crafted; save the bundle again.")
    files = {name.removeprefix(_FOLDER): data for name, data in members.items() if name != "sealed.npy"}
    if "config.json" not in files or not any(name.endswith(".safetensors") for name in files):
        raise DataError(f"{str(path)!r}: its model/ folder lacks config.json or the safetensors weights. Save the "
                        "bundle again from the pipeline.")
    return files


def _rebuild(manifest: dict, files: dict[str, bytes], path: Path):
    """nbtrain's TextModel from the bundle's files, in eval mode (transformers, local files only)."""
    spec = manifest["model"]
    if spec.get("qualname") != _MODEL[1] or spec.get("module") not in (_MODEL[0], *_OLD_MODULES):
        raise DataError(f"{str(path)!r}: a text bundle holds nbtrain's TextModel; its manifest names "
                        f"{spec.get('module')}.{spec.get('qualname')}. The file was crafted; save it again.")
    n_outputs = (spec.get("config") or {}).get("n_outputs")
    from nbtrain.kinds.text.models import TextModel
    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        try:
            model = TextModel(folder, n_outputs=n_outputs)
        except (ConfigError, OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{str(path)!r}: its transformer could not be rebuilt from the bundle's files ({exc}). "
                            "Install the transformers version it was made with, or save the bundle again.") from exc
    model.config = dict(spec["config"])  # where it was first loaded from, not the temporary folder
    model.source = str(path)
    return model.eval()
