"""The split rule every dataset job shares (docs/datasets.md): ``--split`` names the split the
records go to; ``--val_fraction f`` sends a share f of them, chosen by a hash of each record's id
(``pipelines.dataset.splits.split_for``), to ``val`` instead."""
from __future__ import annotations


def split_problems(split: str, val_fraction: float) -> list:
    """What is wrong with a (--split, --val_fraction) pair, as messages (empty when nothing is)."""
    problems = []
    if not 0.0 <= val_fraction < 1.0:
        problems.append(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not split or "/" in split or (split == "val" and val_fraction > 0):
        problems.append(f"split {split!r} must be a plain name other than 'val' when val_fraction > 0")
    return problems
