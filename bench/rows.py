"""A benchmark row: warren's figure, the baseline measured beside it, their ratio, the target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TargetKind = Literal["ratio", "over", "at_most"]


@dataclass(frozen=True)
class Target:
    """ratio: value ≤ limit × baseline; over: value − baseline ≤ limit; at_most: value ≤ limit."""

    kind: TargetKind
    limit: float

    def describe(self, unit: str) -> str:
        if self.kind == "ratio":
            return f"≤ {self.limit:g}×"
        if self.kind == "over":
            return f"≤ +{self.limit:g} {unit}"
        return f"≤ {self.limit:g} {unit}"

    def met(self, value: float, baseline: float | None) -> bool | None:
        if self.kind == "at_most":
            return value <= self.limit
        if baseline is None:
            return None
        if self.kind == "ratio":
            return baseline > 0 and value / baseline <= self.limit
        return value - baseline <= self.limit


@dataclass
class Row:
    group: str
    subject: str
    value: float | None  # None: not measured here (see note)
    unit: str
    baseline: str
    baseline_value: float | None
    target: Target | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    @property
    def difference(self) -> float | None:
        if self.value is None or self.baseline_value is None:
            return None
        return self.value - self.baseline_value

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.target.met(self.value, self.baseline_value)

    @property
    def status(self) -> str:
        if self.target is None:
            return "info" if self.value is not None else "not measured"
        met = self.met
        if met is None:
            return "not measured"
        return "met" if met else "MISSED"

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "subject": self.subject,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "difference": self.difference,
            "target": self.target.describe(self.unit) if self.target else None,
            "target_kind": self.target.kind if self.target else None,
            "target_limit": self.target.limit if self.target else None,
            "status": self.status,
            "note": self.note,
            "detail": self.detail,
        }
