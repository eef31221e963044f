"""The training doctor's live hook: a Callback that gathers evidence while a run trains.

Live diagnoses: after the start and after every epoch the doctor re-ranks its findings and puts
them in `state.diagnoses` (Diagnosis objects, most important first), so a training view reads them
there (`pipe._active.diagnoses` while a run is in progress). When the run ends, `Doctor.finish`
adds what needs the finished run (the validation recall per class, the tree baseline, how many runs
share the validation split) and returns the final ranking, which becomes `run.diagnoses`.

What it costs: at the start, one scan of the float features for NaN/inf and one forward pass of a
copy of the model on 1,024 train rows; per step, one Python call that returns at once after the
first few steps (update-to-weight ratios are measured on 3 early steps); per epoch, the rules over
the history, a few microseconds. The loop itself stops at a NaN/inf loss (nbtrain.training.loop).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nbtrain.doctor.diagnosis import Finding, rank
from nbtrain.doctor.report import PROFILE
from nbtrain.doctor.probes import (gpu_utilization, one_thread_rate, probe_start, scan_inputs, trivial_loss,
                                   update_ratio, weight_matrices)
from nbtrain.doctor import rules
from nbtrain.training.callbacks import Callback, RunState
from nbtrain.training.losses import loss_name
from nbtrain.training.runs import HEADLINE, SELECTION, selection_value

RATIO_SAMPLES = 3     # early steps whose update-to-weight ratio is measured
RATIO_WINDOW = 200    # ...within this many steps of the start (a long warmup may delay the full lr)


class Doctor(Callback):
    """Pass one per run in fit's callbacks (Pipeline.fit does); read `state.diagnoses` while it trains."""

    def __init__(self, task: str, *, kind: str = "tabular", feature_names=None, train_index=None, val_index=None,
                 classes=None, given: dict | None = None, cell_text: str | None = None, seed: int = 0):
        self.evidence = rules.Evidence(task=task, kind=kind, given=dict(given or {}), cell_text=cell_text,
                                       classes=list(classes) if classes is not None else None)
        self.feature_names, self.seed = feature_names, seed
        self.indexes = {"train": train_index, "validation": val_index}
        self.loop = None
        self._before: list | None = None
        self._measuring = False

    def attach(self, loop) -> None:
        self.loop = loop

    def on_fit_start(self, state: RunState) -> None:
        loop, ev = self.loop, self.evidence
        ev.settings = _settings(loop, ev.given, self.seed)
        ev.device = str(loop.train.y.device)
        ev.loss_name = loss_name(loop.loss_fn)
        ev.scans = [scan for split, batches in (("train", loop.train), ("validation", loop.val))
                    if (scan := scan_inputs(batches, split, self.feature_names, self.indexes[split])) is not None]
        if ev.task in ("binary", "multiclass"):  # classes to count (ranking's targets are relevance grades)
            ev.class_counts = torch.bincount(loop.train.y, minlength=len(ev.classes or ()) or 2).tolist()
        if state.step == 0:  # a resumed run's weights are not a start: nothing to probe
            ev.probe = probe_start(loop.model, loop.loss_fn, loop.train, self.seed)
            ev.trivial = trivial_loss(loop.loss_fn, loop.train, ev.task, ev.probe.outputs)
        ev.threads = torch.get_num_threads()
        if ev.device == "cpu" and ev.threads > 1:  # a yardstick for rules.cpu_threads
            ev.one_thread_rate = one_thread_rate(loop.model, loop.loss_fn, loop.train, loop.optimizer, loop.batch_size)
        self._first_step, self._first_epoch = state.step, state.epoch
        self._measuring = True
        self._snapshot(state)
        self.publish(state)

    def on_step_end(self, state: RunState) -> None:
        if not self._measuring:
            return
        if self._before is not None:
            after = [p.detach() for p in self._watched]
            self.evidence.ratios.append(update_ratio(self._before, after) * self._full_lr / self._lr)
        self._snapshot(state)

    def _snapshot(self, state: RunState) -> None:
        """Copy the weight matrices before a step taken at (nearly) the full lr, to measure its update."""
        group = self.loop.optimizer.param_groups[0]
        self._full_lr, self._lr = group.get("initial_lr", group["lr"]), group["lr"]
        self._measuring = (len(self.evidence.ratios) < RATIO_SAMPLES
                           and state.step - self._first_step < RATIO_WINDOW)
        take = self._measuring and self._lr >= 0.5 * self._full_lr > 0
        # the same tensors before and after: a callback may unfreeze layers in between (nbtrain.kinds.image.models)
        self._watched = weight_matrices(self.loop.model) if take else []
        self._before = [p.detach().clone() for p in self._watched] if take else None

    def on_epoch_end(self, state: RunState) -> None:
        busy = gpu_utilization(self.loop.train.y.device)
        if busy is not None:
            self.evidence.gpu_busy.append(busy)
        self._time(state)
        self.publish(state)

    def on_fit_end(self, state: RunState) -> None:
        self._before, self._measuring = None, False
        self.evidence.non_finite_step = state.non_finite_step
        self._time(state)
        self.publish(state)

    def _time(self, state: RunState) -> None:
        ev, loop = self.evidence, self.loop
        ev.train_seconds, ev.data_seconds = loop.train_seconds, loop.data_seconds
        ev.steps, ev.samples = state.step - self._first_step, len(loop.train) * (state.epoch - self._first_epoch)

    def publish(self, state: RunState) -> None:
        """Put the ranked findings so far where a live view reads them."""
        state.diagnoses[:] = [f.diagnosis for f in self.findings(state.history)]

    def findings(self, history: list, *, baseline: tuple | None = None, compared: int = 0,
                 best: float | None = None) -> list[Finding]:
        """Every rule over the evidence and this history, ranked. `baseline`: (name, metric, this run's
        value, the baseline's); `compared`: runs on this validation split; `best`: this run's headline."""
        ev = self.evidence
        found = rules.bad_inputs(ev) + rules.non_finite(ev, history)
        if not ev.scans:  # with NaN in the inputs, the start probe and the curves say nothing more
            found += self._optimisation(history, baseline)
            found += rules.overfitting(ev, history, baseline) + rules.oscillating(ev, history)
        found += rules.data_bound(ev) + rules.cpu_threads(ev) + rules.class_imbalance(ev)
        found += rules.validation_overuse(compared, len(self.loop.val) if self.loop else 0, ev.task, best)
        return rank(found)

    def _optimisation(self, history: list, baseline: tuple | None) -> list[Finding]:
        """Why the loss does not fall, causes ranked by evidence; underfitting only when none is found."""
        ev = self.evidence
        stalled = bool(rules.not_decreasing(ev, history, []))
        init = rules.poor_init(ev, progressing=len(history) >= 3 and not stalled)
        causes = rank(rules.learning_rate(ev, history) + rules.activation_mismatch(ev)
                      + [f for f in init if f.diagnosis.severity != "info"])
        found = causes + [f for f in init if f.diagnosis.severity == "info"]
        found += rules.not_decreasing(ev, history, causes)
        if not causes and ev.non_finite_step is None:
            found += rules.underfitting(ev, history, baseline)
        return found

    def profile(self) -> str:
        """Throughput and where the training time went (the run's note; on a GPU, how busy it was)."""
        ev = self.evidence
        if ev.train_seconds <= 0:
            return f"{PROFILE} no full epoch was timed."
        share = ev.data_seconds / ev.train_seconds
        busy = f"; GPU busy {sum(ev.gpu_busy) / len(ev.gpu_busy):.0%}" if ev.gpu_busy else ""
        return (f"{PROFILE} {ev.samples / ev.train_seconds:,.0f} train samples/s on {ev.device}; {share:.0%} gathering "
                f"batches, {1 - share:.0%} computing (forward, backward, optimizer){busy}.")

    def finish(self, run, *, runs=(), compared: int = 0) -> list[Finding]:
        """The final ranked findings of a finished run (its model holds the best weights)."""
        ev = self.evidence
        if ev.task in ("binary", "multiclass") and run.best_epoch and not ev.scans:
            # at the run's decision, which Pipeline.fit records before the doctor finishes (settle_network)
            ev.recall = run.config.get("val_class_recall") or class_recall(run.model, self.loop.val, ev.task,
                                                                           len(ev.class_counts or ()))
            ev.decision = (run.config.get("decision") or {}).get("rule", "default")
        metric = HEADLINE[ev.task]
        best = run.best_metrics.get(f"val_{metric}")
        return self.findings(run.history.to_dict("records"), baseline=_baseline(run, runs, ev.task),
                             compared=compared, best=best)


def _settings(loop, given: dict, seed: int) -> dict:
    """The run's settings as the rules quote them, read from the loop (what fit resolved)."""
    groups = loop.optimizer.param_groups
    first = groups[0]
    schedule = given.get("schedule", "cosine") if loop.scheduler is not None else "none"
    return {"lr": first.get("initial_lr", first["lr"]), "weight_decay": max(g.get("weight_decay", 0) for g in groups),
            "schedule": schedule, "batch_size": loop.batch_size, "epochs": loop.epochs,
            "seed": given.get("seed", seed)}


def _baseline(run, runs, task: str) -> tuple | None:
    baselines = [r for r in runs if r.kind == "baseline" and r is not run]
    if not baselines or run.kind == "baseline":
        return None
    # the selection metric, as pipe.runs compares runs: accuracy would depend on each run's decision threshold
    return (baselines[-1].name, SELECTION[task], selection_value(run.best_metrics, task),
            selection_value(baselines[-1].best_metrics, task))


@torch.inference_mode()
def class_recall(model: nn.Module, batches, task: str, n_classes: int, batch_rows: int = 8192) -> list | None:
    """Validation recall of each class (NaN for a class with no validation rows)."""
    was_training = model.training
    model.eval()
    parts = []
    for batch in batches.evaluation_batches(batch_rows):
        out = model(*batch.inputs).float()
        parts.append((out.view(-1) > 0).long() if task == "binary" else out.argmax(dim=1))
    model.train(was_training)
    predicted, y = torch.cat(parts), batches.y
    recall = []
    for c in range(max(n_classes, 2)):
        rows = y == c
        recall.append(float((predicted[rows] == c).float().mean()) if bool(rows.any()) else math.nan)
    return recall
