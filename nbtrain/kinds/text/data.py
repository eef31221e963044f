"""Text for pretrained transformers: cleaning, the tokenizer's identity, the sequence length, token ids.

- A tokenizer is identified by its content, not its name (`name_or_path` is only where it was
  loaded from): `tokenizer_fingerprint` hashes its full definition (vocabulary, normalizer,
  pre-tokenizer, post-processor, added tokens) and its special tokens, but not its padding and
  truncation settings, which say how one call pads, not what the ids mean. Ids made by another
  tokenizer index other rows of the model's embedding table: the model would read noise and
  nothing would fail. So nbtrain refuses them (LeakageError), where they are made and where a
  model meets them.
- The maximum length is learned from the train texts only: the 95th percentile of their token
  counts (special tokens included), rounded up to a multiple of 8 (tensor cores like it), capped
  at what the model can read. The texts that it cuts are counted and reported.
- Ids are stored padded to that length with per-row lengths; each batch is trimmed to its longest
  row (dynamic padding), so short texts do not pay for the long ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbtrain.data import inputs
from nbtrain.data.clean import CleaningReport, rows_phrase
from nbtrain.data.newdata import as_frame
from nbtrain.data.preprocess import PreprocessReport
from nbtrain.errors import ConfigError, DataError, LeakageError

LENGTH_QUANTILE = 0.95
LENGTH_MULTIPLE = 8
MIN_LENGTH = 8               # "auto" never goes below: [CLS] + a few words + [SEP]
FALLBACK_CAP = 512           # when neither the tokenizer nor the model states a limit
_NO_LIMIT = 1_000_000        # transformers writes ~1e30 for "no limit" in model_max_length
EVAL_TOKENS = 16_384         # tokens per evaluation batch: attention memory grows with rows x length^2
_EXAMPLES = 5
# Settings of a slow (pure Python) tokenizer that change how text becomes tokens.
_SLOW_SETTINGS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "add_prefix_space")


# ---- the tokenizer's identity --------------------------------------------------------------

def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what makes a tokenizer produce the ids it does; equal after save/reload.

    A fast tokenizer: its backend definition (`to_str()`) without the padding and truncation
    settings, plus the special tokens map. A slow one (no Rust backend): its class, vocabulary,
    normalisation settings and special tokens.
    """
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
        digest.update(b"backend\0" + json.dumps(spec, sort_keys=True).encode())
    else:
        settings = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items() if k in _SLOW_SETTINGS}
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        digest.update(b"slow\0" + json.dumps([type(tokenizer).__name__, settings, vocab], default=str).encode())
    special = getattr(tokenizer, "special_tokens_map", {})
    digest.update(b"\0special\0" + json.dumps(special, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def tokenizer_name(tokenizer) -> str:
    """Where a tokenizer came from, for messages (its name is not its identity: see the fingerprint)."""
    source = getattr(tokenizer, "name_or_path", "") or "unnamed"
    return f"{type(tokenizer).__name__} from {source}"


def check_fingerprint(received: str, expected: str, received_name: str, expected_name: str, where: str) -> None:
    """LeakageError when two tokenizer fingerprints differ. `where` says what was being done."""
    if received == expected:
        return
    raise LeakageError(f"Text must be tokenized with the model's own tokenizer: {where}, received the tokenizer "
                       f"{received_name} (fingerprint {received[:12]}), expected {expected_name} (fingerprint "
                       f"{expected[:12]}), the tokenizer pipe.preprocess() encoded the train and validation texts "
                       "with. The same ids would mean other tokens to this model, which would read noise; re-run "
                       "pipe.preprocess(model=...) for this model, then fit it.")


# ---- the sequence length -------------------------------------------------------------------

def length_cap(tokenizer, config=None) -> int:
    """The most tokens the model reads: the tokenizer's model_max_length and the model's position
    embeddings, whichever is smaller (RoBERTa has 514 positions for 512 tokens)."""
    caps = [getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None)]
    caps = [int(c) for c in caps if isinstance(c, (int, np.integer)) and 0 < c < _NO_LIMIT]
    return min(caps) if caps else FALLBACK_CAP


def token_lengths(tokenizer, texts) -> np.ndarray:
    """Token counts (special tokens included) of texts, untruncated."""
    encoded = tokenizer(list(texts), truncation=False, padding=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)  # verbose: no "longer than" warning
    return np.fromiter(map(len, encoded["input_ids"]), dtype=np.int64, count=len(encoded["input_ids"]))


def choose_max_length(lengths: np.ndarray, cap: int, quantile: float = LENGTH_QUANTILE) -> int:
    """The `quantile` of the train lengths, rounded up to a multiple of 8, within [MIN_LENGTH, cap]."""
    if not 0 < quantile <= 1:
        raise ConfigError(f"length_quantile must be in (0, 1]; received {quantile!r}.")
    wanted = int(np.ceil(np.quantile(lengths, quantile))) if len(lengths) else MIN_LENGTH
    rounded = -(-wanted // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
    return int(min(cap, max(MIN_LENGTH, rounded)))


def check_max_length(max_length, cap: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise ConfigError(f"max_length must be 'auto' or a whole number of tokens >= 2; received {max_length!r}.")
    if max_length > cap:
        raise ConfigError(f"max_length={max_length} is more tokens than this model reads ({cap}: its position "
                          f"embeddings or its tokenizer's model_max_length); use at most {cap}, or 'auto'.")


def encode(tokenizer, texts, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 token ids (rows, max_length), padded on the right, and each row's length.

    Padded here rather than by the tokenizer, whose padding side may be left (GPT-style): dynamic
    padding trims every batch from the right.
    """
    encoded = tokenizer(list(texts), truncation=True, max_length=int(max_length), padding=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # the mask hides it anyway
    ids = np.full((len(encoded), int(max_length)), pad, dtype=np.int64)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    for row, sequence in enumerate(encoded):
        ids[row, :len(sequence)] = sequence
    return ids, lengths


# ---- split data and the loop's batches -----------------------------------------------------

@dataclass(frozen=True)
class TextData:
    """One split's token ids, padded to the preprocessing's max_length, with per-row lengths."""

    ids: np.ndarray       # int64 (rows, max_length)
    lengths: np.ndarray   # int64 (rows,): tokens before padding
    y: np.ndarray         # int64 class ids or float32 values
    index: pd.Index       # the rows' labels in the caller's DataFrame

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, device, scale: tuple = (0.0, 1.0)) -> TextBatches:
        """The loop's view of this split, moved to `device` once (nbtrain.data.batches has the protocol)."""
        import torch
        y = torch.as_tensor(self.y, device=device)
        y_fit = (y - scale[0]) / scale[1] if y.is_floating_point() else y
        return TextBatches(ids=torch.as_tensor(self.ids, device=device),
                           lengths=torch.as_tensor(self.lengths, device=device), y=y, y_fit=y_fit,
                           host_lengths=self.lengths)


@dataclass
class TextBatches:
    """Token ids on the device; every batch is cut to its longest row, with the attention mask to match."""

    ids: object            # torch int64 (units, max_length)
    lengths: object        # torch int64 (units,)
    y: object
    y_fit: object
    host_lengths: np.ndarray  # the same lengths on the host: evaluation batch widths without a device read
    input_names = ("input_ids", "attention_mask")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self):
        return self.y.device

    def inputs(self, rows, width: int) -> tuple:
        import torch
        positions = torch.arange(width, device=self.ids.device)
        mask = (positions < self.lengths[rows].unsqueeze(1)).long()
        return self.ids[rows, :width], mask

    def take(self, rows) -> tuple:
        """(inputs, y_fit) of these rows, as wide as the longest of them."""
        width = int(self.lengths[rows].max()) if len(rows) else 1
        return self.inputs(rows, width), self.y_fit[rows]

    def load(self, chunks):
        """The epoch's batches in order. All their widths are read in one go: a read per batch would
        make a GPU wait for the host at every step."""
        import torch
        chunks = list(chunks)
        if not chunks:
            return
        widths = torch.stack([self.lengths[rows].max() for rows in chunks]).tolist()
        for rows, width in zip(chunks, widths):
            yield self.inputs(rows, width), self.y_fit[rows]

    def evaluation_batches(self, batch_rows: int):
        from nbtrain.data.batches import EvaluationBatch
        rows = max(1, min(batch_rows, EVAL_TOKENS // max(1, self.ids.shape[1])))
        for start in range(0, len(self), rows):
            part = slice(start, start + rows)
            width = max(1, int(self.host_lengths[part].max()))
            yield EvaluationBatch(self.inputs(part, width), self.y_fit[part], self.y[part], len(self.y[part]), {})


# ---- the fitted preprocessing --------------------------------------------------------------

class TextPreprocessor:
    """A pretrained model's tokenizer, its fingerprint, and the max length learned from train texts."""

    def __init__(self, tokenizer, text_col, *, name_or_path=None, max_length="auto",
                 length_quantile: float = LENGTH_QUANTILE, cap: int | None = None):
        self.tokenizer = tokenizer
        self.text_col = text_col
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.length_quantile = length_quantile
        self.cap = cap if cap is not None else length_cap(tokenizer)
        if max_length != "auto":
            check_max_length(max_length, self.cap)

    def fit(self, texts: pd.Series) -> TextPreprocessor:
        """Fingerprint the tokenizer; choose the max length from these (train) texts."""
        self.fingerprint_ = tokenizer_fingerprint(self.tokenizer)
        self.tokenizer_name_ = tokenizer_name(self.tokenizer)
        lengths = token_lengths(self.tokenizer, texts)
        self.max_length_ = (choose_max_length(lengths, self.cap, self.length_quantile) if self.max_length == "auto"
                            else int(self.max_length))
        self.train_lengths_ = {"median": float(np.median(lengths)), "p95": float(np.quantile(lengths, 0.95)),
                               "max": int(lengths.max())}
        self.truncated_ = int((lengths > self.max_length_).sum())
        return self

    def count_truncated(self, texts: pd.Series) -> int:
        """How many of these texts are longer than max_length (and so are cut)."""
        return int((token_lengths(self.tokenizer, texts) > self.max_length_).sum()) if len(texts) else 0

    def split_data(self, rows: pd.DataFrame, y: np.ndarray | None = None) -> TextData:
        """Rows' texts as token ids (y: zeros when the rows come without targets, as for predict)."""
        self.check_tokenizer(self.tokenizer, "encoding texts")
        ids, lengths = encode(self.tokenizer, rows[self.text_col], self.max_length_)
        targets = np.zeros(len(rows), dtype=np.float32) if y is None else y
        return TextData(ids=ids, lengths=lengths, y=targets, index=rows.index)

    def check_tokenizer(self, tokenizer, where: str) -> None:
        """LeakageError unless `tokenizer` is, by content, the one this preprocessing was fitted with
        (it may be the same object, changed since: add_tokens on a model's tokenizer changes it)."""
        check_fingerprint(tokenizer_fingerprint(tokenizer), self.fingerprint_, tokenizer_name(tokenizer),
                          self.tokenizer_name_, where)

    def check_model(self, model, where: str = "fitting a model") -> bool:
        """Refuse a model whose tokenizer differs (LeakageError); False when it carries none to compare."""
        fingerprint = getattr(model, "tokenizer_fingerprint", None)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            fingerprint = tokenizer_fingerprint(tokenizer)  # now, not at build time: it may have changed
        if fingerprint is None:
            return False
        name = tokenizer_name(tokenizer) if tokenizer is not None else f"of {type(model).__name__}"
        check_fingerprint(fingerprint, self.fingerprint_, name, self.tokenizer_name_, where)
        return True


@dataclass(repr=False)
class TextPreprocessReport(PreprocessReport):
    """The result of `TextPipeline.preprocess()`."""

    title = "Preprocessing report (text)"
    tokenizer: str = ""
    fingerprint: str = ""
    vocabulary: int = 0
    max_length: int = 0
    max_length_reason: str = ""
    train_lengths: dict = field(default_factory=dict)   # median, p95, max tokens of the train texts
    truncated: dict = field(default_factory=dict)       # split -> texts longer than max_length
    truncated_share: dict = field(default_factory=dict)

    def _summary(self) -> list[str]:
        cut = "; ".join(f"{name} {self.truncated.get(part, 0)} of {rows} ({self.truncated_share.get(part, 0):.1%})"
                        for part, name, rows in (("train", "train", self.train_rows),
                                                 ("val", "validation", self.val_rows)))
        lengths = self.train_lengths
        return [f"Tokenized the {self.train_rows} train and {self.val_rows} validation texts with {self.tokenizer} "
                f"(fingerprint {self.fingerprint[:12]}, {self.vocabulary} tokens); test stays sealed until test().",
                f"Train texts: median {lengths.get('median', 0):.0f} tokens, 95th percentile "
                f"{lengths.get('p95', 0):.0f}, longest {lengths.get('max', 0)}.",
                f"max_length {self.max_length}: {self.max_length_reason}.",
                f"Texts cut at max_length: {cut}. Each batch is padded only to its longest text."]


def text_preprocess_report(pre: TextPreprocessor, train: TextData, val: TextData,
                           val_texts: pd.Series) -> TextPreprocessReport:
    cut = {"train": pre.truncated_, "val": pre.count_truncated(val_texts)}
    share = {"train": cut["train"] / max(1, len(train)), "val": cut["val"] / max(1, len(val))}
    reason = (f"the {pre.length_quantile:.0%} quantile of the train texts' tokens, rounded up to a multiple of "
              f"{LENGTH_MULTIPLE}, at most {pre.cap} (the model's limit)" if pre.max_length == "auto"
              else "as given")
    report = TextPreprocessReport(train_rows=len(train), val_rows=len(val), n_inputs=pre.max_length_,
                                  tokenizer=pre.tokenizer_name_, fingerprint=pre.fingerprint_,
                                  vocabulary=len(pre.tokenizer), max_length=pre.max_length_,
                                  max_length_reason=reason, train_lengths=dict(pre.train_lengths_),
                                  truncated=cut, truncated_share=share)
    if pre.max_length != "auto" and share["train"] > 1 - LENGTH_QUANTILE:
        report.warnings.append(f"max_length={pre.max_length_} cuts {share['train']:.0%} of the train texts; "
                               "what they say after that is never read. max_length='auto' keeps 95% whole.")
    return report


# ---- cleaning ------------------------------------------------------------------------------

@dataclass(repr=False)
class TextCleaningReport(CleaningReport):
    """The result of `TextPipeline.clean()`: which rows were dropped, and why."""

    title = "Cleaning report (text)"
    text_col: object = None
    missing_texts: list = field(default_factory=list)      # index labels
    empty_texts: list = field(default_factory=list)        # "" or only whitespace
    non_string_texts: list = field(default_factory=list)   # (label, type name)
    conflicting: int = 0                                   # rows dropped: the same text with different labels
    conflicting_examples: list = field(default_factory=list)  # (text, labels)
    ignored_columns: list = field(default_factory=list)
    words: dict = field(default_factory=dict)              # median and max words per kept text

    def _summary(self) -> list[str]:
        lines = [f"{self.rows_in} rows in, {self.rows_out} rows kept; the model reads the text column "
                 f"{self.text_col!r}" + (f" (median {self.words['median']:.0f} words, longest {self.words['max']})."
                                         if self.words else ".")]
        if self.rows_without_target:
            lines.append(f"Dropped {rows_phrase(self.rows_without_target)} without a target, "
                         f"e.g. {self.rows_without_target_examples}.")
        for what, rows in (("without a text", self.missing_texts), ("with an empty or blank text", self.empty_texts)):
            if rows:
                lines.append(f"Dropped {rows_phrase(len(rows))} {what}, e.g. {rows[:_EXAMPLES]}.")
        if self.non_string_texts:
            shown = ", ".join(f"{label!r} ({kind})" for label, kind in self.non_string_texts[:_EXAMPLES])
            lines.append(f"Dropped {rows_phrase(len(self.non_string_texts))} whose text is not a string, e.g. {shown}.")
        if self.duplicates:
            shown = ", ".join(f"{d!r} (same as {k!r})" for d, k in self.duplicate_examples)
            lines.append(f"Dropped {rows_phrase(self.duplicates)} repeating another's text and label, e.g. {shown}.")
        if self.conflicting:
            shown = "; ".join(f"{text!r}: {labels}" for text, labels in self.conflicting_examples)
            lines.append(f"Dropped {rows_phrase(self.conflicting)} whose text appears with different labels "
                         f"(no label can be trusted), e.g. {shown}.")
        return lines

    def _sections(self):
        return []


def clean_texts(frame: pd.DataFrame, text_col, target, required=(), ignored=()) -> tuple:
    """(kept rows, their positions in `frame`, TextCleaningReport). Each dropped row counts once,
    under the first reason: no target (or time/group value), no text, not a string, blank, duplicate."""
    text = frame[text_col]
    is_string = text.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    missing_text = text.isna().to_numpy()
    blank = np.zeros(len(frame), dtype=bool)
    blank[is_string] = text[is_string].str.strip().eq("").to_numpy(dtype=bool)
    no_target = frame[target].isna().to_numpy()
    for name in required:
        no_target |= frame[name].isna().to_numpy()
    labels = frame.index
    report = TextCleaningReport(rows_in=len(frame), text_col=text_col, ignored_columns=list(ignored))
    report.rows_without_target = int(no_target.sum())
    report.rows_without_target_examples = labels[no_target][:_EXAMPLES].tolist()
    rest = ~no_target
    report.missing_texts = labels[rest & missing_text].tolist()
    report.non_string_texts = [(label, type(value).__name__) for label, value in
                               zip(labels[rest & ~missing_text & ~is_string], text[rest & ~missing_text & ~is_string])]
    report.empty_texts = labels[rest & blank].tolist()
    keep = rest & is_string & ~blank
    keep &= ~_duplicates(frame, text_col, target, keep, report)
    positions = np.flatnonzero(keep)
    kept = frame.iloc[positions]
    report.rows_out = len(kept)
    if len(kept):
        words = kept[text_col].str.split().str.len()
        report.words = {"median": float(words.median()), "max": int(words.max())}
    if ignored:
        report.warnings.append(f"The columns {list(ignored)} are ignored: the text model reads only {text_col!r}. "
                               "Put what they say into the text, or train a tabular model on them.")
    if report.conflicting:
        report.warnings.append(f"{rows_phrase(report.conflicting)} carry a text that also appears with another "
                               "label; they were dropped. Many such rows suggest noisy labels.")
    return kept, positions, report


def _duplicates(frame: pd.DataFrame, text_col, target, keep: np.ndarray, report: TextCleaningReport) -> np.ndarray:
    """Rows to drop among `keep`: every copy of a text seen with different labels, and all but the first
    copy of a text repeated with the same label (a copy in train and one in test would test memory)."""
    drop = np.zeros(len(frame), dtype=bool)
    candidates = frame.iloc[np.flatnonzero(keep)][[text_col, target]]
    positions = np.flatnonzero(keep)
    labels_per_text = candidates.groupby(text_col, sort=False)[target].nunique()
    conflicted = candidates[text_col].isin(labels_per_text.index[labels_per_text > 1]).to_numpy()
    drop[positions[conflicted]] = True
    report.conflicting = int(conflicted.sum())
    for text, group in candidates[conflicted].groupby(text_col, sort=False):
        if len(report.conflicting_examples) >= _EXAMPLES:
            break
        shown = text if len(text) <= 60 else text[:57] + "..."
        report.conflicting_examples.append((shown, sorted(map(str, group[target].unique()))))
    repeated = candidates[text_col].duplicated().to_numpy() & ~conflicted
    drop[positions[repeated]] = True
    report.duplicates = int(repeated.sum())
    if report.duplicates:
        firsts = candidates[~conflicted].drop_duplicates(text_col)
        kept_label = dict(zip(firsts[text_col], firsts.index.tolist()))  # text -> the label of the copy kept
        dropped = candidates[repeated].head(_EXAMPLES)
        report.duplicate_examples = [(label, kept_label[t]) for label, t in
                                     zip(dropped.index.tolist(), dropped[text_col])]
    return drop


def new_texts(new_data, text_col) -> pd.DataFrame:
    """New rows as a DataFrame whose `text_col` holds a string in every row; DataError otherwise."""
    frame = as_frame(new_data)
    inputs.require_column(frame.columns, text_col, "text column")
    bad = ~frame[text_col].map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {len(frame)} new rows have no text (or a value that is not a "
                        f"string) in {text_col!r}, e.g. rows {frame.index[bad][:5].tolist()}; drop them.")
    return frame
