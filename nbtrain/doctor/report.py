"""`DoctorReport`: a run's diagnoses, most important first, as text and HTML (what %nbtrain doctor shows)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from nbtrain.doctor.diagnosis import SEVERITIES, Diagnosis, from_dict
from nbtrain.doctor.fixes import train_line
from nbtrain.doctor.rules import validation_overuse
from nbtrain.report import Report

PROFILE = "Where the training time went:"   # the run note that the doctor writes (Doctor.profile)

_COLOURS = {"error": "#b00020", "warning": "#b35900", "info": "#1f5fa8"}


@dataclass(repr=False)
class DoctorReport(Report):
    """Reads like a list of Diagnosis too: report[0].code, len(report), for d in report."""

    title = "Training doctor"
    run: str = ""
    diagnoses: list = field(default_factory=list)
    profile: str = ""          # throughput and where the training time went, when known
    warnings: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.diagnoses)

    def __len__(self) -> int:
        return len(self.diagnoses)

    def __getitem__(self, i) -> Diagnosis:
        return self.diagnoses[i]

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diagnoses]

    def _summary(self) -> list[str]:
        head = (f"Run {self.run!r}: {len(self.diagnoses)} finding{'s' if len(self.diagnoses) != 1 else ''}, most "
                "important first." if self.diagnoses else f"Run {self.run!r}: no findings; training looks healthy.")
        return [head, *([self.profile] if self.profile else [])]

    def _sections(self):
        return [(f"{i}. [{d.severity}] {d.code}", [f"Evidence: {d.evidence}", f"Fix: {d.fix}"])
                for i, d in enumerate(self.diagnoses, 1)]

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4>", *(f"<div>{html.escape(s)}</div>" for s in self._summary())]
        for d in self.diagnoses:
            colour = _COLOURS.get(d.severity, "#333")
            parts.append(f'<div style="border-left:4px solid {colour};padding:2px 8px;margin:6px 0">'
                         f'<b style="color:{colour}">{html.escape(d.severity)}</b> <code>{html.escape(d.code)}</code>'
                         f"<div>{html.escape(d.evidence)}</div><div><b>Fix:</b> {html.escape(d.fix)}</div></div>")
        return '<div class="nbtrain-report">' + "".join(parts) + "</div>"


def with_finding(diagnoses: list, fresh: list, code: str) -> list:
    """`diagnoses` with those of `code` replaced by `fresh` ones, each at the end of its severity group."""
    kept = [d for d in diagnoses if d.code != code]
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    for finding in fresh:
        at = sum(order[d.severity] <= order[finding.severity] for d in kept)
        kept.insert(at, finding)
    return kept


def doctor_report(name: str, diagnoses: list, best_metrics: dict, task: str, compared: int, val_rows: int,
                  notes: list = ()) -> DoctorReport:
    """A run's report, from its Diagnosis objects (or their ledger records), with validation overuse
    judged again for `compared` runs on the split."""
    stored = [d if isinstance(d, Diagnosis) else from_dict(d) for d in diagnoses]
    best = best_metrics.get("val_accuracy") if task != "regression" else None
    fresh = [f.diagnosis for f in validation_overuse(compared, val_rows, task, best)]
    profile = next((n for n in notes if n.startswith(PROFILE)), "")
    return DoctorReport(run=name, diagnoses=with_finding(stored, fresh, "validation_overuse"), profile=profile)


def retry_text(cell_text: str | None, changes: dict, given: dict) -> str:
    """The cell text of an auto_fix retry: the %%train line with the changes, then the same body."""
    line = train_line(changes, given, cell_text)
    body = (cell_text or "").split("\n", 1)[1:] if (cell_text or "").lstrip().startswith("%%train") else []
    return "\n".join([line, *body])
