"""Fuzzing with Hypothesis: segmentations and whole COCO documents nobody listed.

Properties: nothing crashes; a segmentation is either rasterized to the image's size or refused
with a documented reason; a conversion job accounts for every image it is given (written +
rejected = listed) and every rejection is an error record with a reason. The CI budget is fixed
below; SEGPIPE_FUZZ_EXAMPLES=N runs N examples per test (e.g. 2000 for a long run)."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from segformat import masks as M

# CI: a fixed, derandomized set of examples (a failure there is reproducible); a larger budget draws new ones.
BUDGET = int(os.environ.get("SEGPIPE_FUZZ_EXAMPLES", "0"))
REASONS = {"malformed_segmentation", "non_finite_coordinates", "coordinates_out_of_range", "malformed_rle",
           "empty_segmentation", "polygon_under_3_points", "rle_size_mismatch", "rle_length_mismatch"}
H, W = 13, 17

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.floats(min_value=-5, max_value=25))
polygon = st.lists(numbers, max_size=14)
counts_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=130), max_size=12)
segmentation = st.one_of(
    st.lists(polygon, max_size=3),
    polygon,
    st.fixed_dictionaries({"size": st.one_of(st.just([H, W]), st.lists(st.integers(-3, 40), max_size=3)),
                           "counts": st.one_of(st.lists(st.integers(-5, H * W + 5), max_size=6), counts_text,
                                               st.integers(), st.none())}),
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.lists(st.text(max_size=2), max_size=3), max_size=2))


@settings(max_examples=BUDGET or 400, deadline=None, derandomize=not BUDGET)
@given(segmentation)
def test_a_segmentation_is_rasterized_to_the_image_or_refused_with_a_reason(seg):
    try:
        rle = M.annotation_rle(seg, H, W)
    except M.AnnotationError as error:
        assert error.reason in REASONS, error.reason
        return
    assert mask_utils.decode(rle).shape == (H, W)


def _image(path, h, w):
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


file_names = st.one_of(st.sampled_from(["a.png", "b.png", "sub/c.png", "missing.png", "../a.png", "/etc/passwd",
                                        "ü ñ.png", "", "a.png/"]), st.text(max_size=6))
image_entry = st.fixed_dictionaries({
    "id": st.one_of(st.integers(1, 4), st.integers(-2, 10**12), st.text(max_size=3)),
    "file_name": file_names,
    "height": st.one_of(st.just(20), st.integers(-1, 30), st.floats(allow_nan=True)),
    "width": st.one_of(st.just(24), st.integers(-1, 30)),
})
annotation_entry = st.fixed_dictionaries({
    "id": st.integers(1, 50), "image_id": st.integers(0, 5), "category_id": st.integers(0, 3),
    "iscrowd": st.sampled_from([0, 1, 2, "x"]), "segmentation": segmentation})


@pytest.mark.slow  # whole conversion jobs, a dozen of them
@settings(max_examples=BUDGET // 20 or 12, deadline=None, derandomize=not BUDGET,
          suppress_health_check=list(HealthCheck))
@given(images=st.lists(image_entry, max_size=4), annotations=st.lists(annotation_entry, max_size=5),
       extra_key=st.booleans())
# What fuzzing found (both fixed): two entries of one id counted as one rejection; a height of
# Infinity (JSON allows it in practice) killed the streaming pass instead of one record.
@example(images=[{"id": 1, "file_name": "a.png", "height": 20, "width": 24}] * 2, annotations=[], extra_key=False)
@example(images=[{"id": 1, "height": math.inf, "file_name": "a.png", "width": 24},
                 {"id": 2, "file_name": "b.png", "height": 20, "width": 24}], annotations=[], extra_key=False)
def test_a_coco_job_accounts_for_every_image(tmp_path_factory, images, annotations, extra_key):
    from pipelines import coco_to_tfrecord
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images/sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png", "ü ñ.png"):
        _image(root / "images" / name, 20, 24)
    document = {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}]}
    if extra_key:
        document["info"] = {"nested": [1, {"x": None}]}
    (root / "a.json").write_text(json.dumps(document, allow_nan=True))
    try:
        result = coco_to_tfrecord.run(["--annotations", str(root / "a.json"), "--images", str(root / "images"),
                                       "--output_dir", str(root / "out")])
        assert result is not None
    except SystemExit as stop:  # allowed only as the documented "nothing was written"
        assert "nothing was written" in str(stop.code), stop.code
    # the job ran (even one that wrote nothing writes its errors and stats): every image entry is
    # written or rejected, and each rejection is exactly one error record with its reason
    stats = json.loads((root / "out/stats.json").read_text())
    errors = [json.loads(line) for line in (root / "out/errors.jsonl").read_text().splitlines()]
    assert all(e.get("reason") and e.get("source") is not None for e in errors)
    written, rejected = stats["images_written"], stats["images_rejected"]
    image_errors = [e for e in errors if e["reason"] in stats["images_rejected_by_reason"]
                    and not str(e["source"]).startswith("annotation ")]
    assert written + rejected == len(images), (written, rejected, len(images), stats)
    assert rejected == sum(stats["images_rejected_by_reason"].values())
    assert len(image_errors) == rejected, (image_errors, stats)


# ---- damaged real photos ---------------------------------------------------------------------
IMAGE_REASONS = {"empty_file", "truncated_image", "corrupt_image", "unsupported_format", "decompression_bomb"}


def _real_photo_bytes():
    from tests.conftest import TESTDATA
    photos = sorted((TESTDATA / "coco_person_val2017/images").glob("*.jpg"))[:2] + \
        sorted((TESTDATA / "kitti_road/image_2").glob("*.png"))[:1]
    return [p.read_bytes() for p in photos]


damage = st.tuples(st.sampled_from(["flip", "truncate", "splice", "none"]), st.integers(0, 2**31),
                   st.integers(1, 24))


@settings(max_examples=BUDGET or 60, deadline=None, derandomize=not BUDGET,
          suppress_health_check=list(HealthCheck))
@given(which=st.integers(0, 2), damage=damage)
# What a larger budget found (all fixed): a JPEG whose data segment ends early and a JPEG with
# junk inside its headers (Pillow decodes both, TensorFlow refuses them), a PNG with one flipped
# bit in its image data (Pillow skips the chunk CRC, libpng does not).
@example(which=0, damage=("flip", 234216465, 14))
@example(which=0, damage=("splice", 6, 1))
@example(which=2, damage=("flip", 98477, 1))
def test_a_damaged_real_photo_is_refused_with_a_reason_or_decodes_in_the_trainer_too(testdata, which, damage):
    """What the dataset jobs accept (pipelines.common.images.inspect_image), TensorFlow's decoder in the
    trainer reads at the size the job recorded; everything else is an ImageError with a reason."""
    import tensorflow as tf

    from pipelines.common import images as image_checks
    data = bytearray(_real_photo_bytes()[which])
    kind, position, amount = damage
    if kind == "flip":  # bit flips anywhere, header included
        for k in range(amount):
            offset = (position + k * 7919) % len(data)
            data[offset] ^= 1 << (k % 8)
    elif kind == "truncate":
        data = data[:position % len(data)]
    elif kind == "splice":  # a run of bytes of the file copied over another place
        start, length = position % len(data), amount * 64
        data[start:start + length] = data[:length]
    try:
        fmt, height, width = image_checks.inspect_image(bytes(data))
    except image_checks.ImageError as error:
        assert error.reason in IMAGE_REASONS, error.reason
        return
    decoded = tf.io.decode_image(bytes(data), channels=3, expand_animations=False).numpy()
    assert decoded.shape == (height, width, 3) and fmt in ("jpeg", "png")


# ---- mask files of every kind Pillow writes ---------------------------------------------------
MASK_REASONS = {"unmapped_mask_color", "size_mismatch", "corrupt_image", "truncated_image", "unsupported_format",
                "unreadable_image", "unsupported_mask_mode"}
mask_modes = st.sampled_from(["1", "L", "P", "I;16", "LA", "RGB", "RGBA"])


@settings(max_examples=BUDGET or 60, deadline=None, derandomize=not BUDGET,
          suppress_health_check=list(HealthCheck))
@given(mode=mask_modes, values=st.lists(st.integers(0, 70000), min_size=1, max_size=4),
       size=st.sampled_from([(6, 8), (1, 1), (7, 8)]), channels=st.sampled_from([1, 3]), default=st.booleans())
def test_a_mask_file_becomes_classes_from_the_color_table_or_a_reason(mode, values, size, channels, default):
    """Palette, 16-bit, 32-bit, 1-bit, grey+alpha and RGBA masks: the pair converter gives a
    mask of the image's size whose values all come from COLORS.json, or an error record."""
    import io

    from pipelines.masks_to_tfrecord import ColorMap, PairExampleFn
    h, w = size
    rng = np.random.default_rng(sum(values))
    bands = {"1": 1, "L": 1, "P": 1, "I;16": 1, "I": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    limit = {"1": 2, "I;16": 65536, "I": 70001}.get(mode, 256)
    pixels = rng.choice([v % limit for v in values], size=(h, w, bands))
    if mode == "1":
        mask_image = Image.fromarray(pixels[..., 0].astype(bool))
    elif mode in ("I;16", "I"):
        mask_image = Image.fromarray(pixels[..., 0].astype(np.uint16 if mode == "I;16" else np.int32))
        assert mask_image.mode == mode
    elif mode == "P":
        mask_image = Image.fromarray(pixels[..., 0].astype(np.uint8)).convert("P")
    else:
        mask_image = Image.fromarray(pixels.astype(np.uint8).squeeze(-1) if bands == 1 else pixels.astype(np.uint8))
        assert mask_image.mode == mode
    buffer = io.BytesIO()
    mask_image.save(buffer, format="PNG")
    photo = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), 120, np.uint8)).save(photo, format="PNG")
    table = [{"color": [v % 256] * channels if channels == 3 else [v], "index": k % 3}
             for k, v in enumerate(sorted(set(values)))]
    color_map = ColorMap.from_json({"classes": ["a", "b", "c"], "colors": table,
                                    **({"default": 0} if default else {})})
    fn = PairExampleFn(color_map, "train", "/images")
    outputs = list(fn.convert("k", ("/images/k.png", "/masks/k.png"), ((photo.getvalue(), None),
                                                                          (buffer.getvalue(), None))))
    records = [o for o in outputs if isinstance(o, tuple)]
    errors = [o.value for o in outputs if getattr(o, "tag", None) == "errors"]
    assert len(records) + len(errors) == 1, outputs
    if errors:
        assert errors[0]["reason"] in MASK_REASONS, errors[0]
        return
    mask = np.asarray(Image.open(io.BytesIO(records[0][2].mask_png)))
    assert mask.shape == (6, 8) == size[:2]
    allowed = {entry["index"] for entry in table} | ({0} if default else set())
    assert set(np.unique(mask)) <= allowed


# ---- odd GeoTIFFs ------------------------------------------------------------------------------
@settings(max_examples=BUDGET or 30, deadline=None, derandomize=not BUDGET,
          suppress_health_check=list(HealthCheck))
@given(bands=st.sampled_from([1, 2, 3, 4, 6]), dtype=st.sampled_from(["uint8", "uint16", "int16", "float32"]),
       size=st.sampled_from([(1, 1), (1, 70), (45, 1), (33, 70)]), crs=st.booleans(),
       geo=st.sampled_from(["north-up", "rotated", "none"]), nodata=st.sampled_from([None, 0, "nan"]),
       choose=st.sampled_from([None, "1", "3,2,1", "9,1,1"]))
def test_an_odd_geotiff_is_read_chunk_by_chunk_or_refused_with_a_reason(tmp_path_factory, bands, dtype, size, crs,
                                                                        geo, nodata, choose):
    """1, 2, 4 or 6 bands, 8/16-bit and float with NaN nodata, rotated or missing transform, no
    CRS, 1-pixel rasters, band choices it lacks: planned into chunks whose every window reads as
    uint8 RGB of the window's size, or refused (a ValueError naming the problem)."""
    import rasterio
    from rasterio.transform import Affine

    from pipelines.segment.chunks import ChunkJob, plan_chunks
    if nodata == "nan" and dtype != "float32":
        nodata = None
    h, w = size
    path = tmp_path_factory.mktemp("odd") / "odd.tif"
    rng = np.random.default_rng(h * w + bands)
    data = (rng.random((bands, h, w)) * 3000).astype(dtype)
    if nodata == "nan":
        data[:, : max(1, h // 3)] = np.nan
    transform = {"north-up": Affine(10, 0, 500000, 0, -10, 4100000),
                 "rotated": Affine(8, 3, 500000, 2, -8, 4100000), "none": None}[geo]
    profile = dict(driver="GTiff", width=w, height=h, count=bands, dtype=dtype, crs="EPSG:32633" if crs else None,
                   nodata=float("nan") if nodata == "nan" else nodata)
    if transform is not None:
        profile["transform"] = transform
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        try:
            chunks = plan_chunks(str(path), "odd", 32, 8, 32, choose)
        except ValueError as error:  # a band the raster lacks
            assert choose and max(int(b) for b in choose.split(",")) > bands and "band" in str(error), error
            return
        covered = np.zeros((h, w), bool)
        for chunk in chunks:
            job = ChunkJob(chunk)
            assert job.open() == (h, w)
            r0, r1, c0, c1 = chunk.core
            pixels, valid = job.read(r0, c0, r1 - r0, c1 - c0)
            job.close()
            assert pixels.shape == (r1 - r0, c1 - c0, 3) and pixels.dtype == np.uint8
            assert valid is None or valid.shape == pixels.shape[:2]
            covered[r0:r1, c0:c1] = True
        assert covered.all()


# ---- command lines -----------------------------------------------------------------------------
FLAG_VALUES = st.one_of(st.sampled_from(["", "0", "-1", "-7", "3", "1e9", "nan", "x", "all", "voc", "none", "*",
                                         "a,b", "9,9,9", "gs://", "../..", "/nonexistent/x.json"]),
                        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2fff), max_size=6))
COMMAND_FLAGS = {
    ("dataset", "coco"): ["--annotations", "--images", "--output_dir", "--classes", "--split", "--val_fraction",
                          "--num_shards", "--crowd", "--overlap", "--max_image_pixels"],
    ("dataset", "masks"): ["--images", "--masks", "--output_dir", "--mask_colors", "--split", "--num_shards",
                           "--image_key_regex", "--mask_key_regex"],
    ("segment",): ["--model", "--input", "--output_dir", "--tile_size", "--tile_overlap", "--batch_size",
                   "--bands", "--chunk_size", "--precision", "--model_copies"],
    ("train",): ["--train_data", "--val_data", "--model_dir", "--config", "--arch", "--image_size", "--batch_size",
                 "--epochs", "--optimizer", "--schedule", "--export_layout", "--progress", "--width"],
    ("evaluate",): ["--model", "--data", "--split", "--output"],
}


REQUIRED = {("dataset", "coco"): 3, ("dataset", "masks"): 4, ("segment",): 3, ("train",): 1, ("evaluate",): 2}


@st.composite
def command_lines(draw):
    """The command's required flags (now and then one left out), then any flags, some valueless."""
    words = draw(st.sampled_from(sorted(COMMAND_FLAGS)))
    required = COMMAND_FLAGS[words][:REQUIRED[words]] + (["--model_dir"] if words == ("train",) else [])
    if draw(st.integers(0, 5)) == 0:
        required = required[1:]
    flags = required + draw(st.lists(st.one_of(st.sampled_from(COMMAND_FLAGS[words]), st.just("--frobnicate")),
                                     max_size=5))
    argv = list(words)
    for flag in flags:
        argv += [flag, draw(FLAG_VALUES)] if draw(st.integers(0, 5)) else [flag]
    return argv


@pytest.mark.slow  # each example may load a job module and run until it meets the missing inputs
@settings(max_examples=BUDGET // 10 or 40, deadline=None, derandomize=not BUDGET,
          suppress_health_check=list(HealthCheck))
@given(argv=command_lines())
@example(argv=["train", "--train_data", "gs://", "--model_dir", ""])  # found: a TensorFlow traceback
def test_any_command_line_ends_in_a_clear_message_never_a_traceback(tmp_path_factory, argv):
    """Missing, repeated, mistyped and unknown flags with odd values (the inputs they name do not
    exist): status 1 or 2 and a message on stderr, or a one-line SystemExit, never a traceback."""
    import contextlib
    import io

    from segcli import main
    where = tmp_path_factory.mktemp("cli")
    err = io.StringIO()
    old = os.getcwd()
    os.chdir(where)  # whatever a command line creates stays in a scratch folder
    try:
        with contextlib.redirect_stderr(err):
            try:
                status = main.main(argv)
            except SystemExit as stop:
                status = stop.code
    finally:
        os.chdir(old)
    text = err.getvalue()
    assert "Traceback" not in text, (argv, text)
    if isinstance(status, str):  # a job's own one-line refusal
        assert "\n" not in status.strip() and status.strip(), (argv, status)  # one line (\x85 is not a newline)
    else:
        assert status in (1, 2), (argv, status, text[-500:])
        assert text.strip().split("\n")[-1].startswith("segpipe "), (argv, text[-500:])
