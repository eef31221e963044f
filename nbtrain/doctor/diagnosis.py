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
                       interval: tuple[float, float]) -> Diagnosis | None:
    """Flag a test score worse than validation by more than the test split's own noise (the
    validation score lies outside the bootstrap interval, on the bad side)."""
    low, high = interval
    worse = val_value > high if higher_is_better else val_value < low
    if not worse:
        return None
    return Diagnosis(
        code="test_worse_than_validation", severity="warning",
        evidence=(f"validation {headline} {val_value:.4g} lies outside the test's 95% bootstrap interval "
                  f"{low:.4g}-{high:.4g} (test {test_value:.4g})."),
        fix=("The validation split was overfit by repeated model selection: a process failure, not a model "
             "failure. Report the test number; next time compare fewer runs on validation, or select by "
             "cross-validation."))
