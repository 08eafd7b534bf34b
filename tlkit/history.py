"""History: what happened in each epoch of a training run.

Example:
    >>> h = History()
    >>> h.append(epoch=1, train_loss=0.5, val_acc=0.9)
    >>> h["val_acc"], h.best("val_acc")
    ([0.9], {'epoch': 1, 'train_loss': 0.5, 'val_acc': 0.9})
"""
from __future__ import annotations

import math


class History:
    """A list of per-epoch records (dicts of numbers) with column access."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = [dict(r) for r in rows or []]

    def append(self, **row) -> None:
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str | int):
        if isinstance(key, int):
            return self.rows[key]
        return [r.get(key) for r in self.rows]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.rows == other.rows

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def best(self, metric: str = "val_acc", mode: str = "max") -> dict | None:
        """The row with the best value of ``metric`` (NaN and missing ignored)."""
        rows = [r for r in self.rows if isinstance(r.get(metric), (int, float)) and not math.isnan(r[metric])]
        if not rows:
            return None
        pick = max if mode == "max" else min
        return pick(rows, key=lambda r: r[metric])

    def last(self) -> dict | None:
        return self.rows[-1] if self.rows else None

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(r) for r in state["rows"]]

    def __repr__(self) -> str:
        if not self.rows:
            return "History(empty)"
        cols = [k for k in self.keys() if k != "lr"]
        lines = ["  ".join(f"{c:>10}" for c in cols)]
        for r in self.rows:
            lines.append("  ".join(f"{_fmt(r.get(c)):>10}" for c in cols))
        return "History(\n" + "\n".join(lines) + "\n)"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
