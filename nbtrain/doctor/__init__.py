"""The training doctor: what went wrong, the evidence, and the fix to try; the learning-rate finder.

- `Doctor`: the Callback that watches a run (Pipeline.fit passes one) and ranks its findings.
- `Diagnosis`: one finding (code, severity, evidence, fix); `DoctorReport`: a run's, ranked.
- `lr_find` / `LRFinderReport`: the learning-rate sweep behind `Pipeline.lr_find()`.
"""

from nbtrain.doctor.diagnosis import CODES, Diagnosis, Finding, rank
from nbtrain.doctor.lr_finder import LRFinderReport, lr_find
from nbtrain.doctor.monitor import Doctor
from nbtrain.doctor.report import DoctorReport

__all__ = ["CODES", "Diagnosis", "Doctor", "DoctorReport", "Finding", "LRFinderReport", "lr_find", "rank"]
