"""The split rule every dataset job applies (docs/datasets.md): a record goes to ``--split``, or with
``--val_fraction f`` to ``val`` when a hash of its id falls below f. (The flags are validated by
``segcli.splits``.)"""
from __future__ import annotations

import hashlib


def split_for(image_id, val_fraction: float, split: str) -> str:
    """Deterministic split: a hash of the image id, stable across runs, machines and workers."""
    if val_fraction <= 0:
        return split
    digest = hashlib.sha256(str(image_id).encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2.0 ** 64 < val_fraction else split
