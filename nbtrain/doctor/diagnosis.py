"""`Diagnosis`: one finding about a run or an evaluation, with its evidence and the fix to try."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Diagnosis:
    code: str        # e.g. "overfitting", "test_worse_than_validation" (DESIGN.md lists them)
    severity: str    # one of SEVERITIES
    evidence: str    # the numbers and epochs that support it
    fix: str         # what to try, as concretely as possible

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.evidence} Fix: {self.fix}"


def compare_test_with_validation(headline: str, higher_is_better: bool, test_value: float, val_value: float,
                                 interval: tuple[float, float], *, compared: int = 2,
                                 over_time: bool = False) -> Diagnosis | None:
    """Flag a test score worse than validation by more than the test split's own noise (the
    validation score lies outside the bootstrap interval, on the bad side), and name the causes the
    evidence allows: repeated model selection needs several runs compared on validation (`compared`);
    a test period later than validation's (`over_time`) may simply be different data."""
    low, high = interval
    worse = val_value > high if higher_is_better else val_value < low
    if not worse:
        return None
    evidence = (f"validation {headline} {val_value:.4g} lies outside the test's 95% bootstrap interval "
                f"{low:.4g}-{high:.4g} (test {test_value:.4g}); {compared} run{'s' if compared != 1 else ''} compared "
                "on this validation split.")
    shift = ("The test interactions come later in time than validation's: the data shifted (new items, changing "
             "tastes or seasons), so a model fitted to the past ranks the later period less well. That is the "
             "estimate to expect in use; retrain on train + validation before deploying, and keep the time split.")
    if compared <= 1:
        fix = shift if over_time else (
            "One model was fitted, so this is not selection on validation: validation and test differ by more than "
            "chance (a split too small or unlucky, or data that differ between them). Report the test number; check "
            "how the split was made and its sizes.")
    else:
        selection = ("Selecting among several runs on validation overfits it: a process failure, not a model failure. "
                     "Report the test number; next time compare fewer runs on validation, or select by "
                     "cross-validation.")
        fix = f"Two causes fit: (1) {selection} (2) {shift}" if over_time else f"The validation split was overfit by " \
            f"repeated model selection. {selection}"
    return Diagnosis(code="test_worse_than_validation", severity="warning", evidence=evidence, fix=fix)


# The codes a Diagnosis may carry (DESIGN.md). Causes (a thing to change) rank above the symptoms they
# explain at the same severity, because the evidence weights below say how sure the doctor is.
CODES = ("non_finite_loss", "bad_input_values", "lr_too_high", "lr_too_low", "not_decreasing", "poor_init",
         "activation_loss_mismatch", "overfitting", "underfitting", "oscillating", "data_bound", "cpu_threads", "class_imbalance",
         "validation_overuse", "test_worse_than_validation")


@dataclass(frozen=True)
class Finding:
    """A Diagnosis with what ranks it and what applies its fix.

    `weight` (0-1) is the strength of the evidence; findings of equal severity are ranked by it.
    `changes` are fit keywords that apply the fix ({"lr": 0.1}); auto_fix=True retries with them.
    """

    diagnosis: Diagnosis
    weight: float = 0.5
    changes: dict | None = None

    @property
    def code(self) -> str:
        return self.diagnosis.code


def rank(findings: list[Finding]) -> list[Finding]:
    """Most important first: errors before warnings before infos, then the strongest evidence."""
    order = {severity: i for i, severity in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda f: (order[f.diagnosis.severity], -f.weight))


def from_dict(record: dict) -> Diagnosis:
    """A Diagnosis from its ledger record (dataclasses.asdict)."""
    return Diagnosis(**{k: record[k] for k in ("code", "severity", "evidence", "fix")})
