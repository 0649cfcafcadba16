"""One row of counts per scenario, printed as a table; notes below it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from faults.checks import Tally


def _span(values: list[int]) -> str:
    return f"{min(values)}-{max(values)}" if values else "-"


@dataclass
class Row:
    """The counts of one scenario run."""

    name: str
    sales: int = 0
    returns: int = 0
    sent: int = 0
    """Distinct webhooks sent."""
    acked: int = 0
    """Distinct webhooks answered 202 at least once."""
    tally: Tally | None = None
    lost: int = 0
    """Sales/returns not done at the end (no Order, no event, no item/refund), acknowledged
    webhooks missing from Kafka, webhooks never acknowledged."""
    duplicated: int = 0
    outage_log_lines: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Broken expectations other than lost/duplicated (a 503 without Retry-After, a stuck process…)."""

    def add_tally(self, t: Tally, extra_lost: int = 0) -> None:
        self.tally = t
        self.lost = t.lost() + extra_lost
        self.duplicated = t.duplicated()

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.duplicated or self.problems)


HEAD = (
    "scenario",
    "sales",
    "returns",
    "acked/sent",
    "Orders/cart",
    "events/Order",
    "items/line",
    "Refunds/tender",
    "refund ev/Order",
    "dead letters",
    "lost",
    "dup",
    "log lines (outage)",
    "s",
)


def table(rows: list[Row]) -> str:
    """The table of ``rows`` (and their notes) as text."""
    lines: list[list[str]] = [list(HEAD)]
    for r in rows:
        t = r.tally or Tally()
        dl: Counter[str] = t.dead_letters
        lines.append(
            [
                r.name,
                str(r.sales),
                str(r.returns),
                f"{r.acked}/{r.sent}",
                _span(list(t.orders_per_cart.values())),
                _span(list(t.events_per_order.values())),
                _span(list(t.items_per_line.values())),
                _span(list(t.refunds_per_tender.values())),
                _span(list(t.refund_events.values())),
                str(sum(dl.values())) + (f" ({', '.join(f'{k} {v}' for k, v in sorted(dl.items()))})" if dl else ""),
                str(r.lost),
                str(r.duplicated),
                "-" if r.outage_log_lines is None else str(r.outage_log_lines),
                f"{r.seconds:.0f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEAD))]
    out = []
    for i, line in enumerate(lines):
        out.append(
            "  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths, strict=True)))
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    for r in rows:
        verdict = "FAILED" if r.failed else "ok"
        out.append(f"{r.name}: {verdict}")
        for p in r.problems:
            out.append(f"  ! {p}")
        for n in r.notes:
            out.append(f"  - {n}")
    return "\n".join(out)
