"""The doctor's rules: each reads the evidence of one run and returns Findings (or none).

Rules are plain functions of an `Evidence` and the run's per-epoch history (a list of dicts with
epoch, train_loss, val_loss, lr, val_<metric>), so they run live after every epoch and once more
when the run ends. When each fires, and why there:

- lr_too_high: the loss turned NaN/inf on finite inputs, or the train loss never got below 1.2x
  where it started, with early update-to-weight ratios above 1e-2. Healthy ratios are about 1e-3
  (Karpathy's rule of thumb); ten times that with a rising loss is divergence. Fix: a tenth of the lr.
- lr_too_low: early ratios below 1e-4 and the train loss fell less than 10%. Fix: ten times the lr.
- not_decreasing: after 3+ epochs the best train loss is less than 5% below the loss at the start
  (measured on 1,024 train rows before the first update); its causes are ranked with it.
- poor_init: at the start, a ReLU layer with 50%+ dead units, activations below 1e-2x or above 1e2x
  the inputs' scale, or 50%+ of tanh/sigmoid outputs saturated.
- activation_loss_mismatch: the outputs at the start cannot be what the loss expects: rows summing
  to 1 (a softmax) or values in (0, 1) (a sigmoid) before a logits loss; never-negative outputs with
  20%+ exact zeros (a ReLU); regression outputs bounded so that 20%+ of the standardised targets
  are out of reach.
- overfitting: the validation loss (mean of the last 3 epochs) 10%+ above its minimum (and by 2%+
  of a constant predictor's loss, so near-zero losses do not count rounding) while the train loss
  fell 10%+ after it; smaller swings are noise on a small validation split. Dropout
  suggested: 0.1 + 0.4 x the rise (capped at 100%), rounded, between 0.1 and 0.5.
- underfitting: both losses within 10% of a constant predictor's, or the selection metric far from
  the tree baseline's (1.25x its validation log loss or RMSE, 0.05 below its NDCG@10) with the train
  loss near validation's. Not accuracy: it depends on each run's decision threshold.
- oscillating: over the second half of the run (6+ epochs) the validation loss reverses direction
  at 50%+ of epochs with a median epoch-to-epoch change of 5%+ of its level (and 1%+ of a constant
  predictor's loss); a converging run changes by under 1% (measured on the test battery).
- cpu_threads: a CPU run on 2+ torch threads computed under a third of what a copy of the model
  computed on one thread at the start (the doctor's probe: forward, backward and an optimizer step).
  On a busy machine torch's default thread count (one per core) leaves threads waiting for cores
  other programs hold: 359 against 24,572 samples/s was seen; the optimizer and batch gathering
  cost less than that margin.
- data_bound: 50%+ of the train time gathering batches (and, on a GPU, under 80% busy).
- class_imbalance: a class below min(20%, 1 / (2 x classes)) of the train rows whose validation
  recall, at the run's decision, is under half the other classes' mean. With calibrated probabilities
  (nbtrain.training.losses) the default decision rarely predicts a rare class: that is the fewest errors,
  not a bug. When its misses cost more, the fix is the decision (threshold="balanced", or "f1"), not
  a weighted loss, which nbtrain corrects back to calibrated probabilities and so the same decisions.
- validation_overuse: the best of N noisy scores on one validation split is optimistic by E[max of N
  standard normals] standard errors (nbtrain.doctor.budget): it fires from 1.5 of them (10 runs), a
  warning from 2 (28 runs); a sweep's report adds the optimism in the metric's own units.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from nbtrain.doctor.budget import OVERUSE_INFO, OVERUSE_WARNING, Budget, expected_max
from nbtrain.doctor.diagnosis import Diagnosis, Finding
from nbtrain.doctor.fixes import format_value, train_line
from nbtrain.doctor.probes import StartProbe

HEALTHY_RATIO = 1e-3
HIGH_RATIO, LOW_RATIO = 1e-2, 1e-4
RARE_SHARE = 0.2
_LOGIT_LOSSES = ("BinaryLoss", "BCEWithLogitsLoss", "CrossEntropyLoss")
RECALL_GAP = 0.5  # a rare class recalled at under half the others' rate


@dataclass
class Evidence:
    """What the doctor knows about one run, gathered by nbtrain.doctor.monitor.Doctor."""

    task: str
    kind: str = "tabular"
    settings: dict = field(default_factory=dict)   # lr, weight_decay, schedule, batch_size, epochs, seed, loss
    given: dict = field(default_factory=dict)      # the keywords the user passed (for the %%train line)
    cell_text: str | None = None
    scans: list = field(default_factory=list)      # InputScan per split with NaN/inf
    probe: StartProbe | None = None
    trivial: float | None = None                   # loss of the best constant prediction (train)
    ratios: list = field(default_factory=list)     # early update-to-weight ratios (median over matrices)
    non_finite_step: int | None = None
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    data_seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1                               # torch's CPU threads during the run
    one_thread_rate: float | None = None           # samples/s of the one-thread probe (CPU runs on 2+ threads)
    gpu_busy: list = field(default_factory=list)
    class_counts: list | None = None               # train rows per class (classification)
    classes: list | None = None
    recall: list | None = None                     # validation recall per class, at the best epoch and decision
    decision: str = "default"                      # the run's decision rule (nbtrain.training.decision)
    loss_name: str = ""

    def line(self, **changes) -> str:
        return train_line(changes, self.given, self.cell_text)

    @property
    def ratio(self) -> float | None:
        finite = [r for r in self.ratios if math.isfinite(r)]
        return statistics.median(finite) if finite else None


def _losses(history: list, key: str) -> list[float]:
    return [float(r[key]) for r in history if key in r and r[key] is not None and math.isfinite(r[key])]


def bad_inputs(ev: Evidence) -> list[Finding]:
    found = []
    for scan in ev.scans:
        columns = ", ".join(f"{name!r} ({n} rows)" for name, n in list(scan.columns.items())[:6])
        more = f" and {len(scan.columns) - 6} more columns" if len(scan.columns) > 6 else ""
        rows = ", ".join(map(repr, scan.rows)) + (" …" if scan.n_rows > len(scan.rows) else "")
        found.append(Finding(Diagnosis(
            "bad_input_values", "error",
            f"The {scan.split} split's features hold NaN or inf in {scan.n_rows} rows: columns {columns}{more}; "
            f"rows {rows} (labels of your DataFrame).",
            "Fix the values where they are made, then re-run pipe.preprocess(): nbtrain's cleaning already "
            "turns NaN/inf in the raw data into missing values and imputes them, so these come later, from a "
            "custom scaler (a log of zero or negative numbers, say) or from numbers beyond float32's range "
            "(|x| > 3.4e38, with scaler='none')."), weight=0.95))
    return found


def non_finite(ev: Evidence, history: list) -> list[Finding]:
    """A NaN/inf loss: explained by bad inputs, by the model itself (NaN before any update), or else
    by gradients exploding under too high an lr."""
    if ev.non_finite_step is None:
        return []
    stopped = (f"The training loss became NaN or inf at step {ev.non_finite_step} (epoch {len(history)}); the run "
               f"stopped there and kept {_kept(history)}.")
    if ev.scans:
        return [Finding(Diagnosis("non_finite_loss", "error", stopped,
                                  "Its cause: NaN or inf in the inputs (bad_input_values)."), weight=0.5)]
    if ev.probe is not None and not math.isfinite(ev.probe.initial_loss):
        return [Finding(Diagnosis(
            "non_finite_loss", "error", f"{stopped} The loss was already {ev.probe.initial_loss} before the first "
            "update, on finite inputs.",
            "The model's forward pass or the loss computes it: look for log, sqrt or division of values that can "
            "be zero or negative, and for a custom loss that is not numerically stable."), weight=0.9)]
    lr, ratio = ev.settings.get("lr"), ev.ratio
    start = f" the loss started at {ev.probe.initial_loss:.4g}," if ev.probe is not None else ""
    moved = (f" The first updates changed the weights by {ratio:.2g}x their size (healthy: about "
             f"{HEALTHY_RATIO:g})." if ratio is not None else "")
    return [Finding(Diagnosis("non_finite_loss", "error", stopped,
                              f"Its likely cause: lr_too_high. Gradient clipping also helps: "
                              f"{ev.line(clip_grad=1.0)}."), weight=0.5),
            Finding(Diagnosis(
                "lr_too_high", "error",
                f"The inputs are finite and{start} so the gradients exploded under lr={format_value(lr)}.{moved}",
                f"A tenth of the lr: {ev.line(lr=lr / 10)}; pipe.lr_find() shows the usable range."),
                weight=0.9 if ratio is None or ratio > HIGH_RATIO else 0.7, changes={"lr": lr / 10})]


def _kept(history: list) -> str:
    evaluated = [r for r in history if math.isfinite(r.get("val_loss", math.nan))]
    return f"the weights of its best epoch (of {len(evaluated)} evaluated)" if evaluated else "the initial weights"


def learning_rate(ev: Evidence, history: list) -> list[Finding]:
    """Too high (the loss ends above its start) or too low (tiny updates, no progress), by the ratios."""
    train, ratio, lr = _losses(history, "train_loss"), ev.ratio, ev.settings.get("lr")
    if ev.probe is None or ratio is None or not train or lr is None or ev.non_finite_step is not None:
        return []
    start = ev.probe.initial_loss
    if ratio > HIGH_RATIO and min(train) > 1.2 * max(start, ev.trivial or start):
        rose = train[0] / start
        return [Finding(Diagnosis(
            "lr_too_high", "error" if rose >= 2 else "warning",
            f"The first updates changed the weights by {ratio:.2g}x their size (healthy: about {HEALTHY_RATIO:g}) "
            f"and the training loss went from {start:.4g} at the start to {train[0]:.4g} in epoch 1; its best, "
            f"{min(train):.4g}, is still above where it started.",
            f"A tenth of the lr: {ev.line(lr=lr / 10)}; pipe.lr_find() shows the usable range."),
            weight=min(0.95, 0.7 + 0.05 * math.log10(ratio / HIGH_RATIO + 1)), changes={"lr": lr / 10})]
    progress = (start - min(train)) / start if start > 0 else 0.0
    if ratio < LOW_RATIO and progress < 0.1:
        return [Finding(Diagnosis(
            "lr_too_low", "warning",
            f"Each update changed the weights by only {ratio:.2g}x their size (healthy: about {HEALTHY_RATIO:g}) "
            f"and the training loss fell {progress:.1%} in {len(train)} epochs ({start:.4g} -> {min(train):.4g}).",
            f"Ten times the lr: {ev.line(lr=lr * 10)}; pipe.lr_find() suggests one."),
            weight=min(0.95, 0.75 + 0.05 * math.log10(LOW_RATIO / ratio)), changes={"lr": lr * 10})]
    return []


def not_decreasing(ev: Evidence, history: list, causes: list) -> list[Finding]:
    train = _losses(history, "train_loss")
    if ev.probe is None or len(train) < 3 or ev.non_finite_step is not None:
        return []
    start = ev.probe.initial_loss
    progress = (start - min(train)) / start if start > 0 else 0.0
    if progress >= 0.05:
        return []
    constant = f"; a constant prediction scores {ev.trivial:.4g}" if ev.trivial is not None else ""
    named = ", ".join(f.code for f in causes)
    moved = f"{progress:.1%} lower" if progress >= 0 else f"{-progress:.0%} higher: it rose"
    return [Finding(Diagnosis(
        "not_decreasing", "warning",
        f"The training loss was {start:.4g} at the start and at best {min(train):.4g} after {len(train)} epochs "
        f"({moved}){constant}.",
        f"The likely cause{'s' if len(causes) > 1 else ''}, ranked: {named} (see each)." if causes else
        "No usual cause found (the lr, the start, the output layer look sound): check the lr with "
        "pipe.lr_find(), and that the features carry signal about the target (pipe.baseline())."),
        weight=0.5)]


def poor_init(ev: Evidence, progressing: bool) -> list[Finding]:
    probe = ev.probe
    if probe is None or not probe.layers:
        return []
    problems, strength = _init_problems(probe)
    if not problems:
        return []
    severity, weight = ("info", 0.3) if progressing else ("warning", 0.6 + 0.3 * strength)
    after = " Training progressed anyway." if progressing else ""
    return [Finding(Diagnosis(
        "poor_init", severity,
        f"At the start, on {min(len(probe.targets), 1024)} train rows: {'; '.join(problems)}.{after}",
        "Initialise for the activation: He (nn.init.kaiming_normal_(w, nonlinearity='relu')) for ReLU layers, "
        "Xavier (nn.init.xavier_uniform_) for tanh, biases at 0; normalise between layers (nn.BatchNorm1d or "
        "nn.LayerNorm); nt.models.MLP does both. Or draw another start: "
        f"{ev.line(seed=int(ev.settings.get('seed') or 0) + 1)}."), weight=weight)]


def _init_problems(probe: StartProbe) -> tuple[list[str], float]:
    problems, strength = [], 0.0
    dead = max(probe.layers, key=lambda s: s.dead)
    if dead.dead >= 0.5:
        problems.append(f"{dead.dead:.0%} of the units of {dead.name!r} ({dead.kind}) output 0 for every row "
                        "(dead units pass no gradient)")
        strength = max(strength, dead.dead)
    saturated = max(probe.layers, key=lambda s: s.saturated)
    if saturated.saturated >= 0.5:
        problems.append(f"{saturated.saturated:.0%} of the outputs of {saturated.name!r} ({saturated.kind}) sit "
                        "on its flat ends (saturated: near-zero gradients)")
        strength = max(strength, saturated.saturated)
    scale = probe.input_std or 1.0
    hidden = probe.layers[:-1] or probe.layers   # the last layer is the output, judged by the loss instead
    smallest, largest = min(hidden, key=lambda s: s.std), max(hidden, key=lambda s: s.std)
    if smallest.std < 1e-2 * scale and smallest.dead < 0.5:  # a dead layer's zeros are already named
        problems.append(f"activations vanish to {smallest.std / scale:.2g}x the inputs' scale by {smallest.name!r}")
        strength = max(strength, min(1.0, -math.log10(max(smallest.std / scale, 1e-12)) / 6))
    if largest.std > 1e2 * scale:
        problems.append(f"activations explode to {largest.std / scale:.3g}x the inputs' scale by {largest.name!r}")
        strength = max(strength, min(1.0, math.log10(largest.std / scale) / 6))
    return problems, strength


def activation_mismatch(ev: Evidence) -> list[Finding]:
    """An output layer that cannot produce what the loss expects, seen in the outputs at the start."""
    probe = ev.probe
    if probe is None or probe.outputs is None or probe.outputs.numel() < 8:
        return []
    problem = (_logits_mismatch(ev.task, probe.outputs) if ev.loss_name in _LOGIT_LOSSES else
               _regression_mismatch(probe) if ev.task == "regression" else None)
    if problem is None:
        return []
    evidence, fix = problem
    last = probe.last_module
    ends = f" The model's last module is {type(last).__name__}." if last is not None and not list(last.parameters()) \
        else ""
    return [Finding(Diagnosis("activation_loss_mismatch", "error",
                              f"{evidence} The loss is {ev.loss_name}.{ends}", fix), weight=0.9)]


def _logits_mismatch(task: str, out) -> tuple[str, str] | None:
    rows = len(out)
    if task == "multiclass" and out.ndim == 2 and out.min() >= 0 and (out.sum(dim=1) - 1).abs().max() < 1e-3:
        return (f"On {rows} train rows the model's outputs are probabilities that sum to 1 per row: a softmax is "
                "already applied, and cross-entropy applies its own (the softmax twice flattens the gradients).",
                "Return raw scores (logits) from forward: remove the softmax. nbtrain applies it when it reports "
                "probabilities.")
    zeros = float((out == 0).float().mean())
    if out.min() >= 0 and zeros >= 0.2:
        cannot = ("P(positive) >= 0.5 for every row, so the model can never predict the negative class"
                  if task == "binary" else "a class score stuck at 0 passes no gradient")
        return (f"On {rows} train rows the model's outputs are never negative and {zeros:.0%} are exactly 0 "
                f"(a ReLU on the output): logits must take both signs; here {cannot}.",
                "End the model with a plain nn.Linear (no activation after it).")
    if task == "binary" and out.min() > 0 and out.max() < 1 and float(out.std()) > 0:
        return (f"On {rows} train rows every output lies strictly between 0 and 1: a sigmoid is already applied, "
                "and BCE with logits applies its own (squashed twice, the loss cannot fall far).",
                "Return raw scores (logits) from forward: remove the sigmoid. nbtrain applies it when it reports "
                "probabilities.")
    return None


def _regression_mismatch(probe: StartProbe) -> tuple[str, str] | None:
    out, target = probe.outputs.view(-1), probe.targets.float().view(-1)
    low, high = float(out.min()), float(out.max())
    zeros = float((out == 0).float().mean())
    squashing = type(probe.last_module).__name__ in ("Sigmoid", "Tanh", "Hardtanh", "Softsign")
    if low >= 0 and zeros >= 0.2:
        reach, bound = target >= 0, "never negative"
    elif squashing or (0 < low and high < 1):
        bottom, top = (0.0, 1.0) if low >= 0 else (-1.0, 1.0)
        reach, bound = (target >= bottom) & (target <= top), f"bounded to [{bottom:g}, {top:g}]"
    else:
        return None
    unreachable = 1 - float(reach.float().mean())
    if unreachable < 0.2:
        return None
    return (f"The model's outputs are {bound}, but nbtrain fits regression on the standardised target (mean 0, "
            f"sd 1): {unreachable:.0%} of the targets on {len(target)} train rows are out of its reach.",
            "End the model with a plain nn.Linear (no ReLU, sigmoid or tanh after it): nbtrain converts the "
            "outputs back to your units. For a positive target, predict its log instead.")


def overfitting(ev: Evidence, history: list, baseline: tuple | None) -> list[Finding]:
    val, train = _losses(history, "val_loss"), _losses(history, "train_loss")
    if len(val) < 4 or len(val) != len(train):
        return []
    best = val.index(min(val))
    if len(val) - 1 - best < 2:
        return []
    late_val, late_train = statistics.mean(val[-3:]), statistics.mean(train[-3:])
    rise = (late_val - val[best]) / val[best] if val[best] > 0 else 0.0
    fell = (train[best] - late_train) / train[best] if train[best] > 0 else 0.0
    # near zero, 10% is a rounding error: the rise must also be 2% of what a constant predictor scores
    if rise < 0.1 or fell < 0.1 or late_val - val[best] < 0.02 * (ev.trivial or 0.0):
        return []
    dropout = min(0.5, max(0.1, round(0.1 + 0.4 * min(rise, 1.0), 1)))
    decay = (ev.settings.get("weight_decay") or 1e-3) * 10
    trees = ""
    if ev.kind == "tabular":
        trees = (f" On tables, trees often generalise better: the tree baseline {baseline[0]!r} scores "
                 f"{baseline[1]} {baseline[3]:.4g} against this run's {baseline[2]:.4g}." if baseline else
                 " On tables, trees often generalise better: pipe.baseline() fits one to compare.")
    return [Finding(Diagnosis(
        "overfitting", "warning",
        f"The curves parted at epoch {best + 1}: validation loss was lowest there ({val[best]:.4g}) and rose to "
        f"{late_val:.4g} (+{rise:.0%}, mean of the last 3 epochs) while the training loss fell from "
        f"{train[best]:.4g} to {late_train:.4g}; the gap is now {late_val - late_train:.4g}. The run keeps the "
        f"weights of its best epoch.",
        f"Regularise: dropout {dropout:g} (nt.models.MLP(pipe.n_inputs, pipe.n_outputs, dropout={dropout:g})), "
        f"more weight decay ({ev.line(weight_decay=decay)}), a smaller model, or more training data.{trees}"),
        weight=0.5 + 0.4 * min(rise, 1.0), changes={"weight_decay": decay})]


def underfitting(ev: Evidence, history: list, baseline: tuple | None) -> list[Finding]:
    """Both losses high (near a constant predictor's, or far from the tree baseline's) and train ~ val."""
    val, train = _losses(history, "val_loss"), _losses(history, "train_loss")
    if len(val) < 3 or not train or statistics.mean(train[-3:]) < 0.7 * min(val):
        return []
    found = []
    if ev.trivial and min(val) >= 0.9 * ev.trivial and min(train) >= 0.9 * ev.trivial:
        found.append((f"The best validation loss {min(val):.4g} and the best training loss {min(train):.4g} are "
                      f"within 10% of what a constant prediction scores ({ev.trivial:.4g}): the model learns "
                      "almost nothing from the features.", 0.6))
    if baseline is not None and _far_below(*baseline[1:]):
        name, metric, ours, theirs = baseline
        trees = ev.kind != "interactions"  # implicit feedback's baseline is a popularity ranking, not trees
        found.append((f"Validation {metric} {ours:.4g} against {theirs:.4g} for the "
                      f"{'tree' if trees else 'popularity'} baseline {name!r}, while "
                      f"the training loss ({statistics.mean(train[-3:]):.4g}) is as high as validation's "
                      f"({min(val):.4g}): the model cannot fit what the {'trees find' if trees else 'baseline finds'}.",
                      0.7))
    if not found:
        return []
    evidence, weight = max(found, key=lambda f: f[1])
    epochs = int(ev.settings.get("epochs") or len(val))
    tail = val[-max(3, len(val) // 3):]
    still = (max(tail) - min(tail)) / min(tail) >= 0.05 if min(tail) > 0 else False
    longer = f"train longer: {ev.line(epochs=epochs * 2, patience=20)}" if still else \
        "the curve is flat, so longer training alone will not do"
    return [Finding(Diagnosis(
        "underfitting", "warning", evidence,
        f"More capacity: a wider or deeper model (nt.models.MLP(pipe.n_inputs, pipe.n_outputs, hidden=(512, 256, "
        f"128))), less regularisation (dropout 0, {ev.line(weight_decay=0)}); {longer}."
        + (" On tables, the tree baseline is a strong alternative." if ev.kind == "tabular" else "")),
        weight=weight)]


def _far_below(metric: str, ours: float, theirs: float) -> bool:
    if not (math.isfinite(ours) and math.isfinite(theirs)):
        return False
    return ours > 1.25 * theirs if metric in ("rmse", "log_loss") else theirs - ours >= 0.05


def oscillating(ev: Evidence, history: list) -> list[Finding]:
    val = _losses(history, "val_loss")
    late = val[len(val) // 2:]
    if len(late) < 6:
        return []
    steps = [b - a for a, b in zip(late, late[1:])]
    reversals = sum((a > 0) != (b > 0) for a, b in zip(steps, steps[1:]))
    level = statistics.median(late)
    change = statistics.median(abs(s) for s in steps)
    swing = change / level if level > 0 else 0.0
    if reversals < 0.5 * (len(steps) - 1) or swing < 0.05 or change < 0.01 * (ev.trivial or 0.0):
        return []
    lr = ev.settings.get("lr")
    constant = ev.settings.get("schedule") in ("none", None)
    changes = {"schedule": "cosine"} if constant else {"lr": lr / 3}
    return [Finding(Diagnosis(
        "oscillating", "warning",
        f"Over the last {len(late)} epochs the validation loss reversed direction at {reversals} of "
        f"{len(steps) - 1} epochs, with a median epoch-to-epoch change of {swing:.0%} of its level "
        f"({min(late):.4g} to {max(late):.4g}); a converging run changes by under 1%.",
        f"The lr is too high for late training: {'a decaying schedule' if constant else 'a lower lr'}, "
        f"{ev.line(**changes)}; a larger batch (--batch-size) also averages out the noise."),
        weight=0.5 + 0.4 * min(1.0, swing / 0.2), changes=changes)]


def data_bound(ev: Evidence) -> list[Finding]:
    if ev.train_seconds <= 0 or ev.steps == 0:
        return []
    share = ev.data_seconds / ev.train_seconds
    busy = statistics.mean(ev.gpu_busy) if ev.gpu_busy else None
    if share < 0.5 or (busy is not None and busy >= 0.8):
        return []
    per_step = 1000 * ev.data_seconds / ev.steps, 1000 * (ev.train_seconds - ev.data_seconds) / ev.steps
    gpu = f"; the GPU was busy {busy:.0%} of the time" if busy is not None else ""
    return [Finding(Diagnosis(
        "data_bound", "warning",
        f"{ev.samples / ev.train_seconds:,.0f} samples/s on {ev.device}: {share:.0%} of training time went to "
        f"gathering batches ({per_step[0]:.2f} ms per step) against {per_step[1]:.2f} ms computing{gpu}.",
        "Feed the model faster: keep the data in memory as tensors on the device (nbtrain does this for its own "
        "tabular data, so this source is yours), or stream it with DataLoader(num_workers=4, pin_memory=True, "
        "prefetch_factor=4, persistent_workers=True) so batches load while the model computes."),
        weight=0.5 + 0.8 * (share - 0.5))]


def cpu_threads(ev: Evidence) -> list[Finding]:
    computing = ev.train_seconds - ev.data_seconds
    if ev.one_thread_rate is None or ev.threads < 2 or computing <= 0 or ev.samples == 0:
        return []
    rate = ev.samples / computing
    if rate * 3 > ev.one_thread_rate:
        return []
    return [Finding(Diagnosis(
        "cpu_threads", "warning",
        f"Training computed {rate:,.0f} samples/s on {ev.threads} CPU threads; a copy of the model computed "
        f"{ev.one_thread_rate:,.0f} samples/s on one thread at the start ({ev.one_thread_rate / rate:.0f}x as "
        "fast): the threads wait for cores that other programs hold.",
        "Run torch.set_num_threads(1) in a cell (or the number of idle cores), then train again; on a "
        "machine of your own, stop what else keeps its cores busy."),
        # slow, not wrong: always below the findings about the model (their weights start at 0.5)
        weight=min(0.45, 0.3 + 0.01 * ev.one_thread_rate / rate))]


def class_imbalance(ev: Evidence) -> list[Finding]:
    counts, recall = ev.class_counts, ev.recall
    if not counts or recall is None:
        return []
    total = sum(counts)
    rare = [i for i, n in enumerate(counts) if n / total < min(RARE_SHARE, 0.5 / len(counts))]
    if not rare:
        return []
    least = min(rare, key=lambda i: counts[i])
    others = [r for i, r in enumerate(recall) if i != least and math.isfinite(r)]
    if not math.isfinite(recall[least]) or not others or recall[least] >= RECALL_GAP * statistics.mean(others):
        return []
    name = ev.classes[least] if ev.classes else least
    evidence = (f"Class {name!r} is {counts[least] / total:.1%} of the train rows ({counts[least]} of {total}); at "
                f"the run's decision ({ev.decision}) its validation recall is {recall[least]:.2f}, against "
                f"{statistics.mean(others):.2f} for the other classes: the model rarely predicts it.")
    if ev.decision != "default":
        return [Finding(Diagnosis(
            "class_imbalance", "warning", evidence,
            "The decision already favours the rare class, so the features hardly tell it apart: look at its "
            "validation AUC, add rows of it or features that separate it, and report its recall, not only accuracy."),
            weight=0.6)]
    changes = {"threshold": "balanced"}
    binary = " (or --threshold f1: the best F1 on validation)" if ev.task == "binary" else ""
    return [Finding(Diagnosis(
        "class_imbalance", "warning", evidence,
        f"The probabilities are calibrated, and the default decision makes the fewest errors by rarely naming a rare "
        f"class. If its misses cost more, change the decision: {ev.line(**changes)} predicts it whenever its "
        f"probability is above its share of train{binary}. A weighted loss would not help: nbtrain keeps its "
        "probabilities calibrated, so the decisions stay the same. Report its recall, not only accuracy."),
        weight=0.85, changes=changes)]


def validation_overuse(compared: int, val_rows: int, task: str, best: float | None,
                       budget: Budget | None = None) -> list[Finding]:
    """Fires by the validation budget's rule (nbtrain.doctor.budget): the best of `compared` scores is optimistic
    by E[max of `compared` normals] standard errors; `budget` adds that optimism in the metric's units."""
    k = expected_max(compared)
    if k < OVERUSE_INFO:
        return []
    unit = ""
    if task in ("binary", "multiclass") and best is not None and 0 < best < 1 and val_rows:
        unit = (f" (one standard error of an accuracy near {best:.2f} on {val_rows} rows is "
                f"{math.sqrt(best * (1 - best) / val_rows):.3f})")
    evidence = (f"{compared} runs have been compared on this validation split of {val_rows} rows: the best of {compared} "
                f"noisy scores is optimistic by about {k:.2f} standard errors (the expected maximum of {compared} "
                f"normal draws){unit}.")
    if budget is not None:
        evidence = f"{evidence} {budget.in_units()}".rstrip()
    return [Finding(Diagnosis(
        "validation_overuse", "warning" if k >= OVERUSE_WARNING else "info", evidence,
        "Stop tuning on this split: choose a run and call pipe.test() once (the test split stays the honest "
        "estimate). To keep searching, compare by nested resampling (cross-validation on train + validation, "
        "the search inside each fold), or hold out a fresh validation split from the train rows and judge only the "
        "final pick on it."),
        weight=min(0.8, 0.3 + compared / 100))]
