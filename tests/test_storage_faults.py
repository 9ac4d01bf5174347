"""Object-store faults: every job over gs:// (through tests/fault_proxy.py in front of the GCS
emulator) finishes with the same outputs when 10 % of its requests fail (HTTP 429 and 503, reset
connections, delays), and stops with a clear error naming the object, leaving nothing
half-written, when every request fails."""
import collections
import contextlib
import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.helpers import make_pointwise_model, upload_tree

pytestmark = pytest.mark.slow  # about a minute: three jobs run twice each over the emulator

KITTI_COLORS = {"classes": ["not_road", "road"],
                "colors": [{"color": [255, 0, 255], "index": 1}, {"color": [255, 0, 0], "index": 0},
                           {"color": [0, 0, 0], "index": 255}]}
KITTI_KEYS = ["--image_key_regex", r"^(.+)_(\d+)$", "--mask_key_regex", r"^(.+)_road_(\d+)$"]
RATE = 0.10
SEEDS = {"coco": 1, "masks": 2, "segment": 3}


def tree(prefix: str) -> dict:
    """Every object under prefix: relative name -> bytes (what a reader of the output sees)."""
    from apache_beam.io.filesystems import FileSystems
    found = {}
    for meta in FileSystems.match([f"{prefix}/**"])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            found[meta.path[len(prefix) + 1:]] = handle.read()
    return found


def remove(prefix: str):
    from apache_beam.io.filesystems import FileSystems
    paths = [m.path for m in FileSystems.match([f"{prefix}/**"])[0].metadata_list]
    if paths:
        FileSystems.delete(paths)


@pytest.fixture(scope="module")
def remote_inputs(tmp_path_factory, testdata, gcs_bucket):
    """The three jobs' inputs on gs://: COCO photos + JSON, KITTI pairs, a model + photos + a GeoTIFF."""
    local = tmp_path_factory.mktemp("fault_inputs")
    prefix = f"gs://{gcs_bucket}/faults"
    upload_tree(testdata / "coco_person_val2017", f"{prefix}/coco")
    upload_tree(testdata / "kitti_road", f"{prefix}/kitti")
    (local / "colors.json").write_text(json.dumps(KITTI_COLORS))
    model_dir, _ = make_pointwise_model(local)
    upload_tree(model_dir, f"{prefix}/model")
    rng = np.random.default_rng(0)
    photos = local / "photos"
    photos.mkdir()
    from PIL import Image
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    with rasterio.open(photos / "scene.tif", "w", driver="GTiff", width=90, height=70, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4100000, 10, 10), tiled=True,
                       blockxsize=16, blockysize=16) as dst:
        dst.write(rng.integers(0, 256, (3, 70, 90), dtype=np.uint8))
    upload_tree(photos, f"{prefix}/photos")
    return prefix, local


def run_job(job: str, prefix: str, local, out: str) -> dict:
    """Runs the job; its counters, after checking that every input was written."""
    result = _run_job(job, prefix, local, out)
    counters = collections.Counter()
    for counter in result.metrics().query()["counters"]:  # one per step that counts
        counters[counter.key.metric.name] += counter.committed
    assert not [name for name in counters if "rejected" in name or "failed" in name], counters
    assert counters[{"coco": "images_written", "masks": "images_written", "segment": "images_segmented"}[job]] \
        == {"coco": 4, "masks": 3, "segment": 4}[job], counters
    return counters


def _run_job(job: str, prefix: str, local, out: str):
    from pipelines import batch_segment, coco_to_tfrecord, masks_to_tfrecord
    if job == "coco":
        return coco_to_tfrecord.run(["--annotations", f"{prefix}/coco/annotations/test_coco.json",
                                     "--images", f"{prefix}/coco/images", "--output_dir", out])
    if job == "masks":
        return masks_to_tfrecord.run(["--images", f"{prefix}/kitti/image_2/*.png", "--masks",
                                      f"{prefix}/kitti/gt_image_2/*.png", "--mask_colors", str(local / "colors.json"),
                                      "--output_dir", out, *KITTI_KEYS])
    return batch_segment.run(["--model", f"{prefix}/model", "--input", f"{prefix}/photos/*", "--output_dir", out,
                              "--tile_size", "32", "--chunk_size", "32"])


@pytest.mark.parametrize("job", ["coco", "masks", "segment"])
def test_a_job_gives_the_same_outputs_when_ten_percent_of_requests_fail(job, remote_inputs, storage_faults):
    prefix, local = remote_inputs
    out = f"{prefix}/out-{job}"
    run_job(job, prefix, local, out)
    reference = tree(out)
    assert reference and not any(".tmp-" in name or "staging" in name for name in reference)
    remove(out)
    storage_faults.configure(RATE, seed=SEEDS[job])
    run_job(job, prefix, local, out)
    injected = dict(storage_faults.faults)
    storage_faults.configure(0.0)
    assert sum(injected.values()) >= 3, injected  # the run really met faults
    again = tree(out)
    assert sorted(again) == sorted(reference)
    different = [name for name in reference if again[name] != reference[name]]
    assert not different, (different, injected)
    print(f"{job}: {sum(injected.values())} faults injected {injected}, outputs identical")


@contextlib.contextmanager
def patient_for_seconds(seconds: float = 6):
    """Beam's gs:// client retries a failing request for 120 s before it gives up; the same policy
    with a short deadline keeps the permanent-failure tests short. Only inside the block: what a
    test reads back afterwards is read with the real policy, so a slow moment of a busy machine
    is not taken for a fault. 6 s, not less: inside the block the job's own requests that are not
    meant to fail (the model's metadata) must outlive a dropped connection on a busy machine
    (with 2 s one such request gave up after its first retry while the cores were shared)."""
    from unittest import mock

    from apache_beam.io.gcp import gcsio, gcsio_retry
    short = gcsio_retry.DEFAULT_RETRY_WITH_THROTTLING_COUNTER.with_timeout(seconds)
    with mock.patch.object(gcsio_retry, "get_retry", lambda options: short), \
            mock.patch.object(gcsio, "DEFAULT_RETRY", gcsio.DEFAULT_RETRY.with_timeout(seconds)):
        yield


def fails_with_one_line(argv, storage_faults, capsys, only, kinds) -> str:
    """Runs ``segpipe ARGV`` while every request ``only`` matches fails with one of ``kinds``:
    faults were met, the command exited 1 without a traceback; its last ``segpipe`` line."""
    from segcli import main
    storage_faults.configure(1.0, only=only, kinds=kinds)
    try:
        with patient_for_seconds():
            status = main.main(argv)
    except SystemExit as stop:
        status = stop.code
    finally:
        injected = sum(storage_faults.faults.values())
        storage_faults.configure(0.0)
    err = capsys.readouterr().err
    assert injected and status == 1 and "Traceback" not in err, err[-2000:]
    return [line for line in err.splitlines() if line.startswith("segpipe ")][-1]


ALL_KINDS = ("503", "429", "reset")


# A reset connection's error names no URL, unlike an HTTP error: each is its own case, so that
# which fault lands on the first request does not decide what the test sees.
@pytest.mark.parametrize("job, failing, kinds", [("coco", "every request", ("reset",)),
                                                 ("coco", "every request", ("503",)),
                                                 ("coco", "every write", ALL_KINDS),
                                                 ("masks", "every write", ALL_KINDS),
                                                 ("segment", "every write", ALL_KINDS)])
def test_when_storage_fails_for_good_the_job_stops_with_one_line_naming_the_object(
        job, failing, kinds, remote_inputs, storage_faults, capsys):
    prefix, local = remote_inputs
    out = f"{prefix}/dead-{job}-{failing.split()[1]}-{kinds[0]}"
    argv = {"coco": ["dataset", "coco", "--annotations", f"{prefix}/coco/annotations/test_coco.json",
                     "--images", f"{prefix}/coco/images", "--output_dir", out],
            "segment": ["segment", "--model", f"{prefix}/model", "--input", f"{prefix}/photos/*",
                        "--output_dir", out, "--tile_size", "32", "--chunk_size", "48"],
            "masks": ["dataset", "masks", "--images", f"{prefix}/kitti/image_2/*.png", "--masks",
                      f"{prefix}/kitti/gt_image_2/*.png", "--mask_colors", str(local / "colors.json"),
                      "--output_dir", out, *KITTI_KEYS]}[job]
    writes = lambda method, path, body: method in ("POST", "PUT", "PATCH", "DELETE")
    only = {"every request": None, "every write": writes}[failing]
    line = fails_with_one_line(argv, storage_faults, capsys, only, kinds)
    # the object (an input that cannot be read, an output that cannot be written), or for a
    # failure inside one of Beam's own writers, the output folder and the step
    named = {"every request": [f"{prefix}/coco/annotations/test_coco.json"],
             "every write": [f"could not write {out}/"] if job in ("coco", "masks") else [f"could not write under {out}"]}[failing]
    assert any(name in line for name in named), line
    left = tree(out)  # nothing half-written: no manifest, no temporary or partial object
    assert "dataset.json" not in left and not any(".tmp-" in name or "staging" in name for name in left), sorted(left)
    print(f"{job}, {failing} failing: {line[:160]}...; left behind: {sorted(left)}")


def copies(method, path, body) -> bool:
    """Beam renames a gs:// object with a copy (inside a batch request: the copy's own URL is in
    the body) and a delete of the source: only the copy matches."""
    return method == "POST" and (b"/copyTo/" in body or b"/rewriteTo/" in body
                                 or "/copyTo/" in path or "/rewriteTo/" in path)


def test_a_write_whose_final_copy_fails_for_good_leaves_no_temporary_object(
        remote_inputs, storage_faults):
    """The temporary object is written, then its rename into place (the copy) fails every time:
    the error names the object, and the temporary object is deleted, not left beside it."""
    from pipelines.common import storage
    prefix, _ = remote_inputs
    path = f"{prefix}/final-copy/stats.json"
    storage_faults.configure(1.0, only=copies, kinds=("503",))
    try:
        with patient_for_seconds(), pytest.raises(storage.StorageError, match=f"could not write {path}"):
            storage.write_json(path, {"images": 1})
    finally:
        failed = list(storage_faults.failed_paths)
        storage_faults.configure(0.0)
    assert failed, "no copy request was failed"
    left = tree(f"{prefix}/final-copy")
    assert left == {}, sorted(left)  # neither the object nor its temporary


def test_a_job_whose_final_copies_fail_for_good_leaves_nothing_half_written(
        remote_inputs, storage_faults, capsys):
    prefix, _ = remote_inputs
    out = f"{prefix}/dead-segment-copies"
    line = fails_with_one_line(["segment", "--model", f"{prefix}/model", "--input", f"{prefix}/photos/*",
                                "--output_dir", out, "--tile_size", "32", "--chunk_size", "48"],
                               storage_faults, capsys, copies, ("503",))
    assert f"could not write {out}/" in line or f"could not write under {out}" in line, line
    left = tree(out)
    assert not any(".tmp-" in name or "staging" in name for name in left), sorted(left)
