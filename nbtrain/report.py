"""The base of every report a verb returns: readable as text in a terminal and as HTML in a notebook.

A report keeps its findings as plain attributes (numbers, lists, DataFrames) for code to read; the
two renderings are derived from `_sections()`, so a subclass only says what to show, not how.
"""

from __future__ import annotations

import html

import pandas as pd

Section = tuple[str, "pd.DataFrame | list[str]"]


class Report:
    """A verb's result. Subclasses set `title` and implement `_summary()` and `_sections()`."""

    title = "Report"
    warnings: list[str]

    def _summary(self) -> list[str]:
        return []

    def _sections(self) -> list[Section]:
        return []

    def __repr__(self) -> str:
        lines = [self.title, "=" * len(self.title), *self._summary()]
        for heading, body in self._sections():
            lines += ["", heading + ":"]
            if isinstance(body, pd.DataFrame):
                lines += ["  " + row for row in body.to_string().splitlines()]
            else:
                lines += [f"  - {item}" for item in body]
        if self.warnings:
            lines += ["", "Warnings:", *(f"  ! {w}" for w in self.warnings)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        parts += [f"<div>{html.escape(line)}</div>" for line in self._summary()]
        for heading, body in self._sections():
            parts.append(f"<h5>{html.escape(heading)}</h5>")
            if isinstance(body, pd.DataFrame):
                parts.append(body.to_html(border=0, na_rep=""))
            else:
                parts.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in body) + "</ul>")
        if self.warnings:
            items = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
            parts.append(f'<ul style="color:#b35900">{items}</ul>')
        return '<div class="nbtrain-report">' + "".join(parts) + "</div>"
