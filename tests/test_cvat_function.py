"""The CVAT auto-annotation function (pipelines.labeling.cvat_function) through cvat-cli's and
cvat-sdk's own machinery as far as it goes without a CVAT server: cvat-cli's function loader with
``-p`` parameters, cvat-sdk's spec validation and its driver's check and label mapping of what
``detect`` returns. Masks are decoded with a transcription of cvat-sdk's documented encoding (and
its own decode_mask), polygons filled with matplotlib; no CVAT server is run here."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import COLOR_NAMES as NAMES, make_color_model

RED, GREEN, BLUE, GREY = (220, 30, 30), (30, 220, 30), (30, 30, 220), (40, 40, 40)


def scene() -> np.ndarray:
    """Two road rectangles (one touching the other diagonally: one 8-connected region), a building
    ring with a grey hole, a water square, a 2x2 road speck, on grey."""
    image = np.full((60, 80, 3), GREY, np.uint8)
    image[5:20, 5:25] = RED
    image[20:30, 25:40] = RED  # touches the first only at a corner
    image[35:55, 5:30] = GREEN
    image[40:50, 12:22] = GREY  # the ring's hole
    image[30:50, 50:70] = BLUE
    image[2:4, 70:72] = RED  # a speck
    return image


def decode_cvat_mask(points, height, width) -> np.ndarray:
    """cvat-sdk's mask points, read from its documentation: run lengths alternating between 0 and 1
    (starting with 0) over the box's pixels row by row, then the box's x1, y1, x2, y2 (inclusive)."""
    *runs, x1, y1, x2, y2 = [int(v) for v in points]
    x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    box = np.zeros((y2 - y1 + 1) * (x2 - x1 + 1), bool)
    box[:flat.size] = flat
    out = np.zeros((height, width), bool)
    out[y1:y2 + 1, x1:x2 + 1] = box.reshape(y2 - y1 + 1, x2 - x1 + 1)
    return out


def components(region: np.ndarray) -> int:
    """8-connected components of a boolean array (a flood fill, independent of rasterio)."""
    seen = np.zeros_like(region)
    count = 0
    for y, x in zip(*np.nonzero(region)):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < region.shape[0] and 0 <= nx < region.shape[1] and region[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
    return count


@pytest.fixture(scope="module")
def function(tmp_path_factory):
    """The function as cvat-cli loads it: --function-module with -p parameters -> create(**params)."""
    from cvat_cli._internal.common import FunctionLoader
    model = make_color_model(tmp_path_factory.mktemp("roads-v4"))
    return FunctionLoader("pipelines.labeling.cvat_function", None,
                          {"model": str(model), "tile_size": 128, "min_area": 1}).load(), model


def run_detect(function, image, conf_threshold=None, polygons=False):
    """detect() as cvat-sdk's driver calls it, and its output through the driver's own check and
    label mapping onto a task whose labels are the model's classes in another order."""
    import cvat_sdk.models as models
    from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
    context = _DetectionFunctionContextImpl(frame_name="scene.png", conf_threshold=conf_threshold,
                                            conv_mask_to_poly=polygons)
    shapes = function.detect(context, Image.fromarray(image))
    task_labels = [models.Label(id=100 + k, name=name, type="any", attributes=[], sublabels=[])
                   for k, name in enumerate(reversed(NAMES[1:]))]
    mapper = _AnnotationMapper(logging.getLogger("cvat"), function.spec.labels, task_labels,
                               allow_unmatched_labels=False, conv_mask_to_poly=polygons)
    _, mapped = mapper.validate_and_remap(shapes, 7)
    task_names = {label.id: label.name for label in task_labels}
    return [(task_names[s.label_id], s) for s in mapped]


def test_spec_one_mask_label_per_class_without_background(function):
    fn, _ = function
    assert [(label.name, label.type) for label in fn.spec.labels] == [(n, "mask") for n in NAMES[1:]]


def test_masks_one_per_connected_region_decode_to_segpipes_mask(function):
    from cvat_sdk.masks import decode_mask
    fn, _ = function
    image = scene()
    truth, _ = fn.segment(Image.fromarray(image))
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    shapes = run_detect(fn, image)
    assert all(s.type.value == "mask" and s.frame == 7 for _, s in shapes)
    painted = np.zeros_like(truth)
    for name, shape in shapes:
        region = decode_cvat_mask(shape.points, *truth.shape)
        assert np.array_equal(region, decode_mask(shape.points, image_width=80, image_height=60))
        assert components(region) == 1  # one shape is one connected region
        assert not (painted[region] > 0).any()  # regions do not overlap
        painted[region] = NAMES.index(name)
    assert np.array_equal(painted, truth)
    per_class = {n: sum(1 for name, _ in shapes if name == n) for n in NAMES[1:]}
    assert per_class == {n: components(truth == NAMES.index(n)) for n in NAMES[1:]}
    assert per_class["road"] == 2  # the diagonal pair is one region, the speck another


def test_polygons_when_cvat_asks_and_holes_filled(function):
    from matplotlib.path import Path as Outline
    fn, _ = function
    image = scene()
    truth, _ = fn.segment(Image.fromarray(image))
    shapes = run_detect(fn, image, polygons=True)
    assert shapes and all(s.type.value == "polygon" for _, s in shapes)
    ys, xs = np.mgrid[0:60, 0:80]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    for name, shape in shapes:
        outline = np.asarray(shape.points, float).reshape(-1, 2)
        inside = Outline(outline).contains_points(centres).reshape(60, 80)
        region = truth == NAMES.index(name)
        if name == "building":  # the ring: its polygon is its outline, the hole inside it
            assert np.array_equal(inside, np.pad(np.ones((20, 25), bool), ((35, 5), (5, 50))))
        else:
            assert not (inside & ~region).any() and components(inside) == 1


def test_confidence_threshold_and_minimum_area(function):
    import keras
    fn, model = function
    image = scene()
    image[52:58, 38:46] = (130, 129, 30)  # a doubtful road: red only just ahead of green and grey
    everything = run_detect(fn, image)
    # the reference confidence: the Keras model's own softmax (one tile: no blending)
    net = keras.saving.load_model(str(model / "model.keras"))
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(net(image[None].astype(np.float32)), axis=-1))[0]
    top = probabilities.max(-1)
    means = {id(s): float(top[decode_cvat_mask(s.points, 60, 80)].mean()) for _, s in everything}
    doubtful = [s for _, s in everything if means[id(s)] < 0.9]
    assert len(doubtful) == 1 and 0.6 < means[id(doubtful[0])] < 0.7  # e^2 / (e^2 + e + 1) = 0.665
    for threshold, dropped in ((0.9, 1), (0.6, 0), (None, 0)):
        kept = run_detect(fn, image, conf_threshold=threshold)
        assert len(kept) == len(everything) - dropped, threshold
    # min_area: the 2x2 speck (4 pixels) goes under min_area=5
    from pipelines.labeling.cvat_function import create
    bigger = create(str(model), tile_size=128, min_area=5)
    assert len(run_detect(bigger, scene())) == len(run_detect(fn, scene())) - 1


def test_cvat_cli_knows_the_options_the_docs_give():
    cli = Path(sys.executable).with_name("cvat-cli")
    text = subprocess.run([str(cli), "task", "auto-annotate", "--help"], capture_output=True, text=True,
                          check=True).stdout
    for option in ("--function-module", "--function-parameter", "--conf-threshold", "--conv-mask-to-poly",
                   "--allow-unmatched-labels", "--clear-existing"):
        assert option in text, option
    docs = (Path(__file__).resolve().parents[1] / "docs" / "labeling.md").read_text()
    assert "--function-module pipelines.labeling.cvat_function" in docs and "-p model=str:" in docs
