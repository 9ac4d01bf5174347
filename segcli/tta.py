"""``--tta_scales`` and ``--tta_flip``: test-time augmentation's flags (the views:
``segmodel.tta``), defined once for ``segpipe evaluate`` and ``segpipe segment``."""
from __future__ import annotations

import argparse

# More views than this is a mistake more often than a choice (each is a whole forward pass).
MAX_SCALES = 6


def parse_scales(text: str) -> tuple:
    """"1,1.25" -> (1.0, 1.25): positive, distinct, at most MAX_SCALES."""
    try:
        scales = tuple(float(item) for item in str(text).split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tta_scales takes comma-separated numbers, got {text!r}") from None
    if not scales or any(not 0.25 <= s <= 4 for s in scales) or len(set(scales)) != len(scales) \
            or len(scales) > MAX_SCALES:
        raise argparse.ArgumentTypeError(
            f"--tta_scales takes 1-{MAX_SCALES} distinct factors in [0.25, 4], got {text!r}")
    return scales


def as_scales(value) -> tuple:
    """A configuration's scales (a sequence of numbers, or the flag's text), checked as
    parse_scales checks the flag."""
    return parse_scales(value if isinstance(value, str) else ",".join(map(str, value)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta_scales", type=parse_scales, default=(1.0,), metavar="S1,S2,...",
                        help="test-time augmentation: average the class probabilities of the image resized by each "
                             "factor (default 1: the image as it is); e.g. 1,1.25 helps thin objects; choose on "
                             "validation data")
    parser.add_argument("--tta_flip", action="store_true",
                        help="test-time augmentation: also average each view mirrored left to right (2x the compute)")
