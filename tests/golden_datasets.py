"""The datasets the dataset jobs write from the shared real test data, as SHA-256 digests of
their shards and side files: ``python tests/golden_datasets.py OUT.json`` writes them for the
code checked out (tests/data/golden_datasets.json was made so from the code before its modules
moved into role folders); tests/test_golden_datasets.py checks the code of today against it."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KITTI_KEYS = ["--image_key_regex", r"^(.+)_(\d+)$", "--mask_key_regex", r"^(.+)_road_(\d+)$"]


def cases(testdata: Path) -> dict:
    fmt = testdata / "coco_format_cases" / "coco_instances"
    return {
        "coco_person": ["pipelines.coco_to_tfrecord", "--annotations",
                        str(testdata / "coco_person_val2017/annotations/test_coco.json"),
                        "--images", str(testdata / "coco_person_val2017/images"), "--val_fraction", "0.5"],
        "coco_format_cases": ["pipelines.coco_to_tfrecord", "--annotations", str(fmt / "annotations/instances_train.json"),
                              "--images", str(fmt / "images/train"), "--crowd", "class"],
        "kitti_pairs": ["pipelines.masks_to_tfrecord", "--images", str(testdata / "kitti_road/image_2/*.png"),
                        "--masks", str(testdata / "kitti_road/gt_image_2/*.png"),
                        "--mask_colors", str(ROOT / "examples/kitti_road_colors.json"), *KITTI_KEYS],
        "camvid_val": ["pipelines.masks_to_tfrecord", "--images", str(testdata / "camvid/val/*.png"),
                       "--masks", str(testdata / "camvid/valannot/*.png"), "--split", "val",
                       "--mask_colors", str(ROOT / "examples/camvid_classes.json")],
    }


def digests(folder: Path) -> dict:
    """SHA-256 of each shard and of classes.json and stats.json (errors.jsonl and dataset.json
    name the input and output paths, which differ from run to run)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.suffix == ".tfrecord" or p.name in ("classes.json", "stats.json")}


def make(testdata: Path, code_root: Path = ROOT) -> dict:
    result = {}
    with tempfile.TemporaryDirectory(prefix="segpipe-golden-") as work:
        for name, (module, *args) in cases(testdata).items():
            out = Path(work) / name
            subprocess.run([sys.executable, "-m", module, *args, "--output_dir", str(out)], check=True,
                           capture_output=True, cwd=code_root,
                           env=dict(os.environ, PYTHONPATH=str(code_root), TF_CPP_MIN_LOG_LEVEL="3"))
            result[name] = digests(out)
    return result


if __name__ == "__main__":
    base = Path(os.environ.get("SEGPIPE_TESTDATA", ROOT.parent / "shared" / "testdata"))
    code = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT
    Path(sys.argv[1]).write_text(json.dumps(make(base, code), indent=2, sort_keys=True) + "\n")
