"""The pairing rule the image+mask and raster jobs share (docs/datasets.md): an image and its
mask (a scene and its label raster) pair when a regular expression's ``key`` group, or the whole
match, is the same for both file stems (``pipelines.dataset.colors.pair_key``)."""
from __future__ import annotations

import re

# The whole file stem: a.jpg pairs with a.png, as most image+mask datasets name them.
WHOLE_STEM = r"^(?P<key>.+)$"


def key_regex_problems(config, names) -> list:
    """Each of ``config``'s fields ``names`` that is not a regular expression, as messages."""
    problems = []
    for name in names:
        try:
            re.compile(getattr(config, name))
        except re.error as error:
            problems.append(f"{name} {getattr(config, name)!r} is not a regular expression: {error}")
    return problems
