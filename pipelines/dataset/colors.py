"""Colour tables and the pairing rule the image+mask and raster jobs share (docs/datasets.md):
COLORS.json or a Pascal VOC / CVAT labelmap.txt -> a ColorMap (mask colour -> class index), and
the key that pairs an image with its mask by file stem."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.common import images as image_checks
from segformat.masks import IGNORE_INDEX, MAX_CLASSES, fallback_class_name


# Pascal VOC's "void" colour: object boundaries and pixels nobody labels (255 in a class mask).
VOC_VOID_COLOR = (224, 224, 192)


def voc_color(index: int) -> tuple:
    """Pascal VOC's colour for class ``index`` (its devkit's bit-interleaved colormap)."""
    r = g = b = 0
    for bit in range(8):
        r |= ((index >> 0) & 1) << (7 - bit)
        g |= ((index >> 1) & 1) << (7 - bit)
        b |= ((index >> 2) & 1) << (7 - bit)
        index >>= 3
    return r, g, b


@dataclasses.dataclass(frozen=True)
class ColorMap:
    """Mask colors -> class indices, as read from COLORS.json."""
    colors: tuple  # ((color tuple, index), ...); a color has 3 values (RGB) or 1 (single channel)
    names: tuple
    default: int | None = None

    @property
    def channels(self) -> int:
        return len(self.colors[0][0])

    @classmethod
    def from_json(cls, doc: dict) -> "ColorMap":
        entries = doc.get("colors")
        if entries is None:  # the short form {"255,0,255": 1, ...}
            entries = [{"color": [int(v) for v in str(k).split(",")], "index": v}
                       for k, v in doc.items() if k not in ("classes", "default")]
        colors = []
        for entry in entries:
            color = entry["color"]
            color = tuple(int(v) for v in (color if isinstance(color, (list, tuple)) else [color]))
            index = int(entry["index"])
            if not (0 <= index <= MAX_CLASSES or index == IGNORE_INDEX):
                raise ValueError(f"class index {index} must be 0..{MAX_CLASSES} or {IGNORE_INDEX}")
            colors.append((color, index))
        if not colors or len({len(c) for c, _ in colors}) != 1 or len(colors[0][0]) not in (1, 3):
            raise ValueError("COLORS.json needs colors that are all RGB triples or all single values")
        top = max([i for _, i in colors if i != IGNORE_INDEX], default=0)
        names = list(doc.get("classes") or [])
        names += [fallback_class_name(i) for i in range(len(names), top + 1)]
        default = doc.get("default")
        return cls(tuple(colors), tuple(names), None if default is None else int(default))

    @classmethod
    def from_labelmap(cls, text: str) -> "ColorMap":
        """A Pascal VOC / CVAT "Segmentation mask 1.1" labelmap.txt (``name:r,g,b:parts:actions``
        per line, index = line order): each label's colour, or VOC's default colour for its index
        when the line gives none; VOC's boundary colour (224, 224, 192) is ignored (255)."""
        names, colors = [], []
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, rest = line.partition(":")
            color = rest.split(":")[0].strip()
            index = len(names)
            names.append(name.strip())
            colors.append((tuple(int(v) for v in color.split(",")) if color else voc_color(index), index))
        if not names:
            raise ValueError("labelmap.txt holds no labels")
        if VOC_VOID_COLOR not in {c for c, _ in colors}:
            colors.append((VOC_VOID_COLOR, IGNORE_INDEX))
        return cls(tuple(colors), tuple(names), None)

    def classes_json(self) -> dict:
        return {"ignore_index": IGNORE_INDEX,
                "classes": [{"index": i, "name": n} for i, n in enumerate(self.names)]}

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """[H, W, C] or [H, W] mask colors -> [H, W] uint8 class ids; raises on unlisted colors."""
        raw = raw.reshape(raw.shape[0], raw.shape[1], -1).astype(np.int64)
        codes = raw[..., 0]
        for c in range(1, raw.shape[2]):
            codes = codes * 65536 + raw[..., c]
        table = {}
        for color, index in self.colors:
            code = 0
            for v in color:
                code = code * 65536 + v
            table[code] = index
        unique, inverse = np.unique(codes, return_inverse=True)
        mapped = np.empty(len(unique), dtype=np.uint8)
        for k, code in enumerate(unique):
            if int(code) in table:
                mapped[k] = table[int(code)]
            elif self.default is not None:
                mapped[k] = self.default
            else:
                values = [int(code) // 65536 ** p % 65536 for p in reversed(range(raw.shape[2]))]
                raise image_checks.ImageError("unmapped_mask_color", f"color {values} is not in COLORS.json")
        return mapped[inverse.reshape(codes.shape)]


def load_color_map(path: str) -> ColorMap:
    """The colour table of a ``--mask_colors`` file: COLORS.json, or the labelmap.txt of a
    Pascal VOC / CVAT "Segmentation mask 1.1" export (local or remote)."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode()
    return ColorMap.from_labelmap(text) if path.endswith(".txt") else ColorMap.from_json(json.loads(text))


def pair_key(path: str, pattern: re.Pattern) -> str | None:
    match = pattern.match(image_checks.stem(path))
    if match is None:
        return None
    if "key" in match.groupdict():
        return match.group("key")
    return "_".join(match.groups()) if match.groups() else match.group(0)
