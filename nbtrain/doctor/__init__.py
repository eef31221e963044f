"""The training doctor: what went wrong, the evidence, and the fix to try."""

from nbtrain.doctor.diagnosis import Diagnosis

__all__ = ["Diagnosis"]
