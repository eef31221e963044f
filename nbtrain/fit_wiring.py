"""What Pipeline.fit wires around the training loop (nbtrain.training.fit): the chosen batch size and lr,
the live view, the training doctor, the trackers (MLflow, W&B: nbtrain.tracking), the end of every run
(decision, findings, notes, the ledger row) and auto_fix's one retry.

Pipeline.fit checks its stage and hands over here; a kind changes what is trained through the
pipeline's hooks (_fit_data, _fit_defaults, _default_model), not through this module.
"""

from __future__ import annotations

import copy
import functools

from nbtrain import autotune
from nbtrain.doctor import Doctor
from nbtrain.doctor.report import retry_text
from nbtrain.errors import ConfigError
from nbtrain.tracking import make_tracker
from nbtrain.training import fit as training
from nbtrain.training.callbacks import RunState
from nbtrain.training.decision import check_rule
from nbtrain.training.interrupts import GracefulInterrupt
from nbtrain.training.progress import make_view
from nbtrain.training.run import Run
from nbtrain.training.runs import compare_with_baseline, settle_network


def fit(pipe, model, *, cell_text: str | None, view, auto_fix: bool, doctor: bool, **hyperparameters) -> Run:
    """One Pipeline.fit call (its docstring says what each keyword does)."""
    if getattr(pipe, "_active", None) is not None:  # e.g. the panel's Train, clicked while a run trains
        raise ConfigError("A run of this pipeline is still training; stop it (its view's Stop button, Kernel > "
                          "Interrupt or pipe.request_stop()) or wait for it to end before starting another.")
    hyperparameters = {**pipe._fit_defaults(), **hyperparameters}
    # batch_size="auto", lr="auto": chosen now, with their reasons in the run's config (nbtrain.autotune)
    hyperparameters = autotune.resolve(pipe, model, hyperparameters)
    tracking = {k: hyperparameters.pop(k) for k in ("tracker", "tracking_uri") if k in hyperparameters}
    threshold = check_rule(hyperparameters.get("threshold", 0.5), pipe.task)  # nbtrain.training.decision
    tracker = make_tracker(pipe, **tracking)  # MLflow and/or W&B (nbtrain.tracking), when asked for
    data = pipe._fit_data()
    engine = _engine(data, hyperparameters)  # devices=N: torchrun's processes train (nbtrain.distributed)
    monitor = hyperparameters.get("monitor", "auto")
    shown = make_view(view, hyperparameters.get("epochs", training.DEFAULTS["epochs"]),
                      "val_loss" if monitor == "auto" else monitor, pipe.request_stop)
    examiner = _doctor(pipe, hyperparameters, cell_text) if doctor else None
    own = list(hyperparameters.pop("callbacks", ()))
    # the doctor first (views read its findings), the user's own next, then the view and the tracker
    callbacks = [c for c in (examiner, *own, shown, tracker) if c is not None]
    fresh = copy.deepcopy(model) if auto_fix else None  # a retry starts from the same initial weights
    hyperparameters.pop("threshold", None)  # applied after training (settle_network), not by the loop
    findings: list = []
    wrap_up = functools.partial(end_run, pipe, examiner=examiner, shown=shown, cell_text=cell_text,
                                findings=findings, data=data, threshold=threshold)
    pipe._active = RunState()
    # one handler for the run and a retry: an Interrupt between the two cancels the retry
    with GracefulInterrupt() as interrupts:
        try:
            run = training.fit(data, model, state=pipe._active, callbacks=callbacks, interrupts=interrupts,
                               on_end=wrap_up, engine=engine, **hyperparameters)
            if tracker is not None:
                tracker.finish(pipe, run)  # params, best metrics, checkpoint and bundle, once the run is logged
        finally:
            pipe._active = None
            if tracker is not None:
                tracker.close()  # a tracker run that fit left by an exception is marked failed (or killed)
        if auto_fix and not interrupts.interrupted:
            return _retry(pipe, run, findings, fresh, cell_text, view,
                          {**hyperparameters, **tracking, "threshold": threshold, "callbacks": own})
    return run


def end_run(pipe, run: Run, error: BaseException | None, *, examiner: Doctor | None = None, shown=None,
            cell_text: str | None = None, findings: list | None = None, data, threshold) -> None:
    """The end of every run, however it ended (training.fit calls it with interrupts held back; import_run
    for a run trained elsewhere): the decision and validation log loss, the doctor's findings (neither for a
    run cut short by an error or a second interrupt), the notes, the view's summary and the ledger row, so
    the run is listed even when fit() re-raises. `findings` receives the doctor's ranked findings."""
    if error is None:
        settle_network(run, data, threshold, pipe.classes if pipe.task in ("binary", "multiclass") else None)
    if examiner is not None and error is None:
        ranked = _diagnose(pipe, examiner, run)
        if findings is not None:
            findings[:] = ranked
    run.notes += compare_with_baseline(run, pipe._runs(), pipe.task)
    run.notes += [examiner.profile()] if examiner is not None and error is None else []
    if hasattr(shown, "finish"):  # after the notes: the run's summary in the notebook shows them
        shown.finish(run)
    pipe._log_run(run, cell_text)
    if run.stop_reason != "error":
        pipe._stage = "trained"


def _engine(data, hyperparameters: dict):
    """fit's engine for devices= other than 1 (nbtrain.distributed.launch); None: this process trains."""
    if hyperparameters.get("devices", 1) == 1:
        return None
    from nbtrain.distributed.launch import engine_for  # torch.distributed's launcher, loaded when asked for
    return engine_for(data, hyperparameters)


def _doctor(pipe, given: dict, cell_text: str | None) -> Doctor:
    return Doctor(pipe.task, kind=pipe.kind, feature_names=pipe.feature_names, train_index=pipe._train.index,
                  val_index=pipe._val.index, classes=pipe.classes if pipe.task != "regression" else None,
                  given=given, cell_text=cell_text, seed=pipe.seed if given.get("seed") is None else given["seed"])


def _diagnose(pipe, examiner: Doctor, run: Run) -> list:
    """The doctor's ranked findings on a finished run, before it is logged (the ledger stores them)."""
    compared = len(pipe.ledger.runs(pipe.fingerprint, pipe.split_id)) + 1  # this run is not logged yet
    findings = examiner.finish(run, runs=pipe._runs(), compared=compared)
    run.diagnoses = [f.diagnosis for f in findings]
    return findings


def _retry(pipe, run: Run, findings: list, model, cell_text, view, hyperparameters: dict) -> Run:
    """auto_fix: retry once with the fix of the top finding, when it has one the doctor can apply."""
    if run.stop_reason in ("interrupted", "stopped"):  # the user ended it: do not start another
        return run
    top = next((f for f in findings if f.diagnosis.severity != "info"), None)
    if top is None or not top.changes:
        why = f"the top finding, {top.code}, needs a fix by hand" if top else "nothing to fix"
        run.notes.append(f"auto_fix: no retry; {why}.")
        return run
    changed = {k: v for k, v in hyperparameters.items() if k not in ("name", "resume")}
    retry = pipe.fit(model, cell_text=retry_text(cell_text, top.changes, hyperparameters), view=view,
                     **{**changed, **top.changes})
    said = ", ".join(f"{k}={v!r}" for k, v in top.changes.items())
    run.notes.append(f"auto_fix: {top.code}; retried as {retry.name!r} with {said}.")
    retry.notes.append(f"auto_fix: a retry of {run.name!r} ({top.code}) with {said}.")
    return retry
