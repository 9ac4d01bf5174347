"""segpipe's command line, the demo's data generator, a reduced demo run, and the report page
in a real headless Chromium."""
import filecmp
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from pipelines import demo
from pipelines.demo_world import scenes as demo_data
from segcli import main as cli


def test_segpipe_help_and_every_subcommand_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "segpipe dataset coco" in capsys.readouterr().out
    for words in cli.COMMANDS:
        with pytest.raises(SystemExit) as info:
            cli.main([*words, "--help"])
        assert info.value.code == 0
        assert "--" in capsys.readouterr().out, words
    assert cli.main(["frobnicate"]) == 2
    script = Path(sys.executable).with_name("segpipe")
    if script.exists():  # the console script that setup.py installs
        out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "segpipe segment" in out.stdout


def test_help_and_flag_errors_load_neither_tensorflow_nor_beam():
    """``segpipe <command> --help`` and a bad flag are answered by segcli alone (what keeps them
    well under a second: TensorFlow alone takes ~4 s to import here)."""
    probe = ("import sys\nfrom segcli import main\nfor argv in {argvs!r}:\n"
             "    try:\n        main.main(argv)\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'apache_beam', 'PIL') if m in sys.modules))")
    argvs = [[*words, "--help"] for words in cli.COMMANDS] + [["segment", "--tile_size", "big"], ["train"]]
    out = subprocess.run([sys.executable, "-c", probe.format(argvs=argvs)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-300:]


def test_tensorflow_start_up_notices_are_hidden_unless_verbose(tmp_path):
    """A command that loads TensorFlow prints only its own error line (TensorFlow's Abseil
    notices are written before TF_CPP_MIN_LOG_LEVEL applies; segcli hides them at the fd)."""
    argv = ["evaluate", "--model", str(tmp_path / "missing"), "--data", str(tmp_path)]
    run = [sys.executable, "-m", "segcli.main"]
    quiet = subprocess.run(run + argv, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [line for line in quiet.stderr.strip().splitlines()
                                                 if line.startswith("segpipe evaluate: ")], quiet.stderr
    loud = subprocess.run(run + ["--verbose"] + argv, capture_output=True, text=True, timeout=120)
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_settings_are_keyword_only_and_validated_with_clear_messages():
    from PIL import Image

    from segcli.coco import CocoConfig
    from segformat.limits import DEFAULT_MAX_PIXELS
    from segcli.segment import SegmentConfig
    from segcli.train import PRESETS, TrainConfig
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS  # the transcription of Pillow's limit
    with pytest.raises(TypeError):
        CocoConfig("images")
    with pytest.raises(TypeError):
        SegmentConfig("m", "o", ("a",))
    for make, message in (
            (lambda: CocoConfig(images_root="i", crowd="keep"), "crowd must be one of"),
            (lambda: CocoConfig(images_root="i", val_fraction=1.0), "val_fraction must be in [0, 1)"),
            (lambda: CocoConfig(images_root="i", split="val", val_fraction=0.1), "other than 'val'"),
            (lambda: SegmentConfig(model="m", output_dir="o", class_names=("a",), tile_size=512, tile_overlap=512),
             "tile_overlap must be in [0, tile_size)"),
            (lambda: SegmentConfig(model="m", output_dir="o", class_names=("a",), tta_scales=(1.0, 1.0)),
             "--tta_scales takes 1-6 distinct factors"),
            (lambda: TrainConfig(**{**PRESETS["tiny"], "arch": "fcn4s"}), "arch must be one of"),
            (lambda: TrainConfig(min_scale=2.0, max_scale=0.5), "min_scale <= max_scale"),
            (lambda: TrainConfig(image_size=16), "image_size must be at least 32")):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            make()
    assert CocoConfig(images_root="i").crowd == "ignore" and TrainConfig(**PRESETS["tiny"]).batch_norm


def test_demo_data_is_deterministic_and_valid_coco(tmp_path):
    a = demo_data.write_coco_dataset(str(tmp_path / "a"), 12, (64, 96), seed=5)
    b = demo_data.write_coco_dataset(str(tmp_path / "b"), 12, (64, 96), seed=5)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    assert not filecmp.dircmp(tmp_path / "a/images", tmp_path / "b/images").diff_files
    coco = COCO(a)
    assert len(coco.imgs) == 12 and [c["name"] for c in coco.loadCats(coco.getCatIds())] == \
        ["road", "building", "water"]
    crowds = [x for x in coco.anns.values() if x["iscrowd"]]
    assert crowds and all(isinstance(x["segmentation"]["counts"], str) for x in crowds)  # compressed RLE
    for ann in coco.anns.values():
        assert coco.annToMask(ann).shape == (64, 96)
    c = demo_data.write_coco_dataset(str(tmp_path / "c"), 12, (64, 96), seed=6)
    assert Path(c).read_bytes() != Path(a).read_bytes()


def test_demo_geotiff_is_georeferenced_and_tiled(tmp_path):
    import rasterio
    path = demo_data.write_geotiff_mosaic(str(tmp_path / "m.tif"), 600, block=256, seed=1,
                                          labels_path=str(tmp_path / "labels.tif"))
    with rasterio.open(path) as src, rasterio.open(tmp_path / "labels.tif") as labels:
        assert (src.width, src.height, src.count) == (600, 600, 3) and src.crs.to_epsg() == 3857
        assert src.profile["tiled"] and labels.transform == src.transform
        assert set(np.unique(labels.read(1))) <= {0, 1, 2, 3}


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, demo.main(["--output_dir", str(out), "--quick"])


@pytest.mark.slow
def test_quick_demo_runs_every_stage(quick_demo):
    out, result = quick_demo
    assert (out / "dataset/classes.json").exists() and list((out / "dataset").glob("val-*.tfrecord"))
    assert (out / "model/model.keras").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result["metrics"]
    assert metrics["road"]["class"] == "road" and 0 <= metrics["road"]["max_f"] <= 1
    raster = json.loads((out / "raster_dataset/dataset.json").read_text())  # the mosaic as chips
    assert raster["splits"]["train"]["examples"] == 1 and (out / "raster_dataset/chips.geojson").exists()
    assert result["raster_metrics"]["images"] == 1
    loop = json.loads((out / "loop/loop.json").read_text())  # the labeling loop ran, every arm scored
    assert loop == result["loop"] and loop["labeled"] == 2 and loop["test_images"] == 3
    assert all(0 <= loop[arm] <= 1 for arm in ("base", "uncertain", "random", "no_new_labels"))
    assert len(json.loads((out / "loop/uncertain/export.json").read_text())) == 2
    # each arm fine-tuned on the base scenes plus exactly the scenes it had labelled (read back
    # from the shards its training read); the control arm on the base scenes only
    for arm in ("uncertain", "random"):
        chosen = loop["chosen"][arm]
        assert len(chosen) == 2 and not set(chosen) & set(loop["base_frames"])
        assert loop["trained_on"][arm] == sorted(loop["base_frames"] + chosen), arm
    assert loop["trained_on"]["no_new_labels"] == loop["base_frames"]
    assert "Labeling loop" in (out / "report/index.html").read_text()
    # The mean IoU recomputed here with NumPy from the exported model's predictions on the
    # validation records (the FCN paper's definition: classes absent from truth and prediction
    # left out, 255 excluded), not with segmodel.metrics.
    from segmodel.exported import load_exported
    from tests.helpers import read_records
    model = load_exported(str(out / "model"))
    intersection, union = np.zeros(4), np.zeros(4)
    for record in read_records(str(out / "dataset/val-*.tfrecord")).values():
        image = np.asarray(Image.open(io.BytesIO(record["image/encoded"])).convert("RGB"))
        predicted = np.asarray(model(image[None])).argmax(-1)[0]
        truth, keep = record["mask"], record["mask"] != 255
        for c in range(4):
            t, p = (truth == c) & keep, (predicted == c) & keep
            intersection[c] += (t & p).sum()
            union[c] += (t | p).sum()
    present = union > 0
    assert metrics["mean_iou"] == pytest.approx((intersection[present] / union[present]).mean(), abs=1e-6)
    assert (out / "segmentation/masks/mosaic.tif").exists()
    assert len((out / "segmentation/summary.jsonl").read_text().splitlines()) == 3 + 1
    assert result["report"] == str(out / "report/index.html")


# `make browser` (called by .ci/run) installs Debian's chromium and chromium-driver; a test never
# installs system packages. CI sets SEGPIPE_REQUIRE_BROWSER=1: there a missing browser fails.
REQUIRE_BROWSER = os.environ.get("SEGPIPE_REQUIRE_BROWSER") == "1"


def find_chromium():
    paths = shutil.which("chromium"), shutil.which("chromedriver")
    return paths if all(paths) else None


def chromium(tmp_path):
    """A headless Chromium driven by selenium (skipped, or failed in CI, when it is not installed)."""
    paths = find_chromium()
    if paths is None:
        message = "Debian's chromium and chromium-driver are not installed (make browser)"
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(paths[1]), options=options)


@pytest.mark.slow
def test_report_loads_in_headless_chromium_without_errors(quick_demo, tmp_path):
    out, result = quick_demo
    driver = chromium(tmp_path)
    try:
        driver.get(Path(result["report"]).as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        headings = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    finally:
        driver.quit()
    assert errors == []
    assert len(images) >= 10 and all(ok for _, ok in images), [src for src, ok in images if not ok]
    assert headings == ["Dataset", "Training", "Evaluation", "Validation samples", "Review queue", "GeoTIFF masks",
                        "Labeling loop"]


@pytest.mark.slow
def test_the_report_stays_readable_with_134_classes(tmp_path):
    """COCO panoptic's 133 classes and background, 30 of them present: the page does not scroll
    sideways, the IoU table lists the present classes worst first, the histogram draws only them
    (one bar per present class, its height growing with their number), the confusion matrix
    keeps its 20 largest classes, the legend only the classes evaluated. A screenshot is kept
    beside the page (report_134_classes.png) for a person to look at."""
    from pipelines import report
    names = ["background"] + [f"class with a long name {k}" for k in range(1, 134)]
    present = list(range(0, 134, 4))[:30]
    rng = np.random.default_rng(0)
    cm = np.zeros((134, 134), np.int64)
    for i in present:
        cm[i, i] = rng.integers(1000, 100000)
        cm[i, present[(present.index(i) + 1) % len(present)]] = rng.integers(0, 5000)
    iou = {n: None for n in names}
    for i in present:
        iou[names[i]] = float(cm[i, i] / (cm[i].sum() + cm[:, i].sum() - cm[i, i]))
    metrics = {"mean_iou": 0.5, "pixel_accuracy": 0.8, "mean_accuracy": 0.6, "frequency_weighted_iou": 0.7,
               "per_class_iou": iou, "confusion_matrix": cm.tolist()}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/stats.json").write_text(json.dumps({
        "images_written": 10, "images_rejected": 0,
        "pixels_per_class": {n: int(cm[k].sum()) for k, n in enumerate(names)}}))
    (tmp_path / "model").mkdir()
    (tmp_path / "model/classes.json").write_text(json.dumps({"classes": [{"index": k, "name": n}
                                                                         for k, n in enumerate(names)]}))
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "summary.jsonl").write_text("".join(json.dumps({
        "input": f"gs://a-bucket-with-a-long-name/and/a/deep/folder/structure/image_{k:012d}.jpg",
        "mask": str(seg / f"m{k}.tif"), "review_priority": 0.5, "mean_confidence": 0.5,
        "class_fraction": {n: 1 / 134 for n in names}}) + "\n" for k in range(3)))
    page = report.build_report(str(tmp_path / "report"), str(tmp_path / "data"), str(tmp_path / "model"),
                               str(tmp_path / "metrics.json"), str(seg))
    text = Path(page).read_text()
    legend = text.split("<p class='legend'>")[1].split("</p>")[0]
    assert legend.count("swatch") == len(present) and "104 classes not in the evaluation" in legend
    table = text.split("<th>F1</th></tr>")[1].split("</table>")[0]
    listed = [row.split("</td>")[0].split(">")[-1] for row in table.split("<tr>")[1:-1]]
    assert listed == sorted((names[i] for i in present), key=lambda n: iou[n])  # worst first, present only
    assert "104 classes neither in the truth nor predicted" in table
    assert "+130 more" in text  # the review queue lists a few classes per image, not 134
    shares = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    np.fill_diagonal(shares, 0)
    i, j = np.unravel_index(np.argmax(shares), shares.shape)
    assert f"Most confused (share of the true class's pixels): {names[i]} &rarr; {names[j]} {shares[i, j]:.1%}" in text
    driver = chromium(tmp_path)
    try:
        driver.get(Path(page).as_uri())
        overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        sizes = driver.execute_script("return Object.fromEntries(Array.from(document.images).map("
                                      "i => [i.getAttribute('src'), [i.naturalWidth, i.naturalHeight]]))")
        driver.set_window_size(1200, driver.execute_script("return document.body.scrollHeight") + 100)
        driver.save_screenshot(str(tmp_path / "report" / "report_134_classes.png"))  # docs/ holds one
    finally:
        driver.quit()
    assert overflow <= 0, overflow
    # Against the same page made for fewer present classes (not against report.py's layout
    # numbers): the histogram grows by about the same height per present class (30 bars, not
    # 134), and the confusion matrix stops growing at 20 classes.
    heights = {n: _report_image_heights(tmp_path / f"fewer{n}", n) for n in (10, 20)}
    heights[30] = {name: sizes[name][1] for name in ("class_histogram.png", "confusion_matrix.png")}
    bar = [(heights[b]["class_histogram.png"] - heights[a]["class_histogram.png"]) / 10 for a, b in ((10, 20), (20, 30))]
    assert bar[0] > 5 and abs(bar[1] - bar[0]) <= 0.1 * bar[0], heights
    small_table = _report_image_heights(tmp_path / "ten_classes", 10, total=10)["confusion_matrix.png"]
    assert heights[30]["confusion_matrix.png"] == heights[10]["confusion_matrix.png"] > small_table


def _report_image_heights(folder: Path, present_count: int, total: int = 134) -> dict:
    """The histogram's and the confusion matrix's heights (pixels, read from the PNGs) of a report
    on ``total`` classes of which ``present_count`` are present."""
    from PIL import Image

    from pipelines import report
    names = ["background"] + [f"class with a long name {k}" for k in range(1, total)]
    present = list(range(0, total, 4 if total > 4 * present_count else 1))[:present_count]
    cm = np.zeros((total, total), np.int64)
    for k, i in enumerate(present):
        cm[i, i] = 1000 * (k + 1)
    iou = {n: (0.5 if k in present else None) for k, n in enumerate(names)}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "mean_iou": 0.5, "pixel_accuracy": 0.8, "mean_accuracy": 0.6, "frequency_weighted_iou": 0.7,
        "per_class_iou": iou, "confusion_matrix": cm.tolist()}))
    (folder / "data").mkdir()
    (folder / "data/stats.json").write_text(json.dumps({"images_written": 10, "images_rejected": 0,
                                                        "pixels_per_class": {n: int(cm[k].sum())
                                                                             for k, n in enumerate(names)}}))
    (folder / "model").mkdir()
    (folder / "model/classes.json").write_text(json.dumps({"classes": [{"index": k, "name": n}
                                                                       for k, n in enumerate(names)]}))
    report.build_report(str(folder / "report"), str(folder / "data"), str(folder / "model"),
                        str(folder / "metrics.json"), "")
    return {name: Image.open(folder / "report" / name).size[1] for name in ("class_histogram.png", "confusion_matrix.png")}


def test_bad_command_lines_are_one_clear_line_and_a_non_zero_exit(tmp_path, capsys):
    """A missing or mistyped flag, a model folder without classes.json, an empty glob, a missing
    annotations file: a message on stderr and a non-zero status, never a traceback."""
    (tmp_path / "model").mkdir()
    (tmp_path / "images").mkdir()
    for argv, code, message in (
            (["segment", "--input", "x/*.png", "--output_dir", "o"], 2, "--model"),
            (["segment", "--model", "m", "--input", "i", "--output_dir", "o", "--tile_size", "big"], 2, "invalid int"),
            (["segment", "--model", str(tmp_path / "model"), "--input", f"{tmp_path}/images/*.png",
              "--output_dir", str(tmp_path / "out")], 1, "classes.json"),
            (["dataset", "coco", "--annotations", str(tmp_path / "none.json"), "--images", str(tmp_path),
              "--output_dir", str(tmp_path / "ds")], "coco_to_tfrecord: --annotations", "does not exist")):
        try:
            status = cli.main(argv)
        except SystemExit as stop:  # argparse (status 2) and the jobs' own one-line exits
            status = stop.code
        err = capsys.readouterr().err
        assert status == code or (isinstance(code, str) and str(status).startswith(code)), (argv, status)
        assert message in (err + str(status)) and "Traceback" not in err, (argv, err)
    import keras

    from segmodel.fcn import export_model
    images = keras.Input((None, None, 3))
    export_model(keras.Model(images, keras.layers.Conv2D(2, 1)(images)), str(tmp_path / "model/model.keras"))
    (tmp_path / "model/classes.json").write_text(json.dumps({"classes": [{"index": 0, "name": "a"},
                                                                         {"index": 1, "name": "b"}]}))
    with pytest.raises(SystemExit, match="nothing was written"):  # an empty glob
        cli.main(["segment", "--model", str(tmp_path / "model"), "--input", f"{tmp_path}/images/*.png",
                  "--output_dir", str(tmp_path / "out")])
