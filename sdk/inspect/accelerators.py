"""What ``edgevit check`` reports (:mod:`.preflight`): one accelerator's view of an
artifact, the report of all of them, and the helpers the analyzers share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

SUITABILITY = ("yes", "maybe", "no")  # the vendor's own three grades (ORT: TryWithEP)


@dataclass
class AcceleratorReport:
    """One accelerator's view of the artifact."""

    accelerator: str  # "NNAPI", "Core ML MLProgram", "TFLite GPU delegate", "Apple Neural Engine", ...
    analyzer: str  # the tool that judged it, with its version
    nodes: int  # operators in the graph (constants excluded)
    supported: int  # of them, those the accelerator takes
    partitions: int  # groups of supported operators the graph splits into
    suitable: str  # "yes" | "maybe" | "no"
    verdict: str  # the analyzer's own sentence
    unsupported: dict[str, list[str]] = field(default_factory=dict)  # op -> layers it comes from
    caveats: list[str] = field(default_factory=list)  # conditions the analyzer did not check
    heuristic: bool = False  # judged from public reports, not by the vendor's tool

    @property
    def share(self) -> float:
        return self.supported / self.nodes if self.nodes else 0.0

    def brief(self) -> str:
        return f"{self.accelerator} {self.partitions} partition{'s' * (self.partitions != 1)} ({self.share:.0%})"


@dataclass
class CheckReport:
    """``edgevit check``'s answer for one artifact."""

    artifact: str
    format: str
    accelerators: list[AcceleratorReport]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: each accelerator's partitions and share of nodes."""
        return "; ".join(a.brief() + ("" if a.suitable == "yes" else f", {a.suitable}") for a in self.accelerators)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "format": self.format, "notes": self.notes,
                "accelerators": [{**asdict(a), "share": round(a.share, 4)} for a in self.accelerators]}


def partitions_in_order(supported: Sequence[bool]) -> int:
    """Runs of supported operators in execution order: the partitions a delegate that
    takes the graph in order forms (an estimate where the analyzer counts none)."""
    return sum(1 for i, ok in enumerate(supported) if ok and (i == 0 or not supported[i - 1]))


def group_layers(pairs: Iterable[tuple[str, str]], limit: int = 6) -> dict[str, list[str]]:
    """op -> the distinct layers it comes from (at most ``limit`` named, then a count)."""
    grouped: dict[str, list[str]] = {}
    for op, layer in pairs:
        layers = grouped.setdefault(op, [])
        if layer not in layers:
            layers.append(layer)
    return {op: layers[:limit] + ([f"... {len(layers) - limit} more"] if len(layers) > limit else [])
            for op, layers in grouped.items()}


def grade(partitions: int, share: float) -> str:
    """ONNX Runtime's rule for an accelerator with a copy cost (usability_checker's
    ``suitability``), applied where the analyzer grades nothing itself."""
    if partitions == 1:
        return "yes" if share > 0.75 else "maybe" if share > 0.5 else "no"
    if partitions == 2 and share > 0.75:
        return "maybe"
    return "no"


def describe(report: CheckReport, line: Callable[[str], None]) -> None:
    """The human table, one accelerator a block, through ``line``."""
    for a in report.accelerators:
        line(f"{a.accelerator}: {a.partitions} partition{'s' * (a.partitions != 1)}, {a.supported}/{a.nodes} "
             f"nodes ({a.share:.1%}); suitable: {a.suitable}" + ("  [heuristic]" if a.heuristic else ""))
        line(f"  analyzer: {a.analyzer}")
        line(f"  verdict: {a.verdict}")
        for op, layers in a.unsupported.items():
            line(f"  unsupported {op}: {', '.join(layers)}")
        for caveat in a.caveats:
            line(f"  unchecked: {caveat}")
    for note in report.notes:
        line(f"note: {note}")
