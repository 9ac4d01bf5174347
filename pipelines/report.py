"""A static HTML report (no server, no network) from any dataset, model, metrics and
batch-segmentation output folders.

    python -m pipelines.report --output REPORT_DIR [--dataset OUT] [--model MODEL] \\
        [--metrics metrics.json] [--segmentation SEG_OUT] [--data 'OUT/val-*.tfrecord']

Sections (each only when its input is given): dataset class histogram; training curves; per-class
IoU table and confusion matrix; input / ground truth / prediction / overlay for validation
samples; the review queue (most uncertain first, with thumbnails); a downscaled view of each
GeoTIFF mask. Pictures are PNG files beside index.html, drawn with matplotlib.
"""
from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import sys

import numpy as np

from pipelines.palette import colorize, overlay, palette
from segcli.report import make_parser
from segformat.masks import IGNORE_INDEX

LOG = logging.getLogger(__name__)
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}img{max-width:100%}.grid img{width:24%;margin:0.2%}.queue{white-space:nowrap}.queue img{height:96px;margin:2px}
.muted{color:#777}section{margin-top:2em}"""


def _save_png(array: np.ndarray, path: str, max_side: int = 512) -> None:
    from PIL import Image
    image = Image.fromarray(array)
    image.thumbnail((max_side, max_side), Image.NEAREST)
    image.save(path)


def _figure(path: str, draw, size=(6, 3.5)) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=size, dpi=100)
    draw(fig, ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _read_json(path: str):
    from apache_beam.io.filesystems import FileSystems
    if not path or not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def dataset_section(out: str, dataset: str) -> str:
    stats = _read_json(f"{dataset}/stats.json")
    if not stats:
        return ""
    pixels = stats["pixels_per_class"]
    names, values = list(pixels), [pixels[n] for n in pixels]

    def draw(fig, ax):
        ax.bar(names, values, color=[np.array(palette()[i if n != "ignore" else IGNORE_INDEX]) / 255
                                     for i, n in enumerate(names)], edgecolor="black")
        ax.set_yscale("log")
        ax.set_ylabel("pixels")
        ax.set_title("class pixel histogram")
    _figure(f"{out}/class_histogram.png", draw)
    split = ", ".join(f"{k}: {v}" for k, v in stats.get("images_written_by_split", {}).items())
    skipped = stats.get("annotations_skipped", {})
    return (f"<section><h2>Dataset</h2><p>{stats['images_written']} images written ({html.escape(split)}), "
            f"{stats['images_rejected']} rejected, {stats.get('annotations_used', 0)} annotations used"
            + (f", skipped: {html.escape(json.dumps(skipped))}" if skipped else "") +
            "</p><img src='class_histogram.png' alt='class pixel histogram'></section>")


def training_section(out: str, model: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    path = f"{model}/history.csv"
    if not model or not FileSystems.exists(path):
        return ""
    with FileSystems.open(path) as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read().decode())))
    if not rows:
        return ""
    epochs = [int(r["epoch"]) + 1 for r in rows]

    def draw(fig, ax):
        for key, style in (("loss", "-"), ("val_loss", "--")):
            if key in rows[0]:
                ax.plot(epochs, [float(r[key]) for r in rows], style, label=key, color="tab:red")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        twin = ax.twinx()
        for key, style in (("mean_iou", "-"), ("val_mean_iou", "--")):
            if key in rows[0]:
                twin.plot(epochs, [float(r[key]) for r in rows], style, label=key, color="tab:blue")
        twin.set_ylabel("mean IoU")
        twin.set_ylim(0, 1)
        fig.legend(loc="lower center", ncol=4, fontsize=8)
        ax.set_title("training curves")
    _figure(f"{out}/training_curves.png", draw)
    return "<section><h2>Training</h2><img src='training_curves.png' alt='training curves'></section>"


def metrics_section(out: str, metrics: dict) -> str:
    if not metrics:
        return ""
    names = list(metrics["per_class_iou"])
    cm = np.array(metrics["confusion_matrix"], np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)

    def draw(fig, ax):
        im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center",
                        color="white" if rows[i, j] > 0.5 else "black", fontsize=8)
        fig.colorbar(im, ax=ax)
        ax.set_title("confusion matrix (rows normalised)")
    _figure(f"{out}/confusion_matrix.png", draw, size=(5.5, 4.5))
    columns = ("per_class_iou", "per_class_precision", "per_class_recall", "per_class_f1")

    def cell(key, name):
        value = metrics.get(key, {}).get(name)
        return "-" if value is None else f"{value:.3f}"
    table = "".join(f"<tr><td style='text-align:left'>{html.escape(n)}</td>"
                    + "".join(f"<td>{cell(key, n)}</td>" for key in columns) + "</tr>" for n in names)
    summary = ", ".join(f"{k.replace('_', ' ')} <b>{metrics[k]:.3f}</b>" for k in
                        ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou"))
    return (f"<section><h2>Evaluation</h2><p>{summary}</p>{road_paragraph(metrics.get('road'))}<table><tr>"
            "<th>class</th><th>IoU</th><th>precision</th><th>recall</th><th>F1</th></tr>"
            f"{table}</table><img src='confusion_matrix.png' alt='confusion matrix'></section>")


def road_paragraph(road) -> str:
    """The KITTI road benchmark's figures and the two rubric rates (segmodel.road_metrics)."""
    if not road or "max_f" not in road:
        return ""
    name = html.escape(road["class"])
    figures = ", ".join(f"{label} <b>{road[key]:.3f}</b>" for key, label in (
        ("max_f", "MaxF"), ("average_precision", "AP"), ("precision", "precision"), ("recall", "recall"),
        ("fpr", "FPR"), ("fnr", "FNR")) if key in road)
    rates = ""
    if road.get("road_labelled_road") is not None and road.get("non_road_labelled_road") is not None:
        rates = (f"<br>Labelled by the model: <b>{road['road_labelled_road']:.1%}</b> of {name} pixels as "
                 f"{name} (rubric: at least 80 %), <b>{road['non_road_labelled_road']:.1%}</b> of the other "
                 f"pixels as {name} (rubric: at most 20 %).")
    return (f"<p class='road'>KITTI road benchmark figures for <b>{name}</b> (image space, at the best "
            f"threshold {road.get('best_threshold', 0):.3f} of its probability): {figures}.{rates}</p>")


def samples_section(out: str, model_dir: str, data: str, samples: int) -> str:
    if not (model_dir and data):
        return ""
    from segmodel import dataset
    from segmodel.evaluate import load_model, predict_classes
    model, _ = load_model(model_dir)
    cells = []
    for k, (image, mask) in enumerate(dataset.evaluation_dataset(data).take(samples)):
        image, truth = image.numpy()[0], mask.numpy()[0, ..., 0]
        prediction = predict_classes(model, image[None])[0].astype(np.uint8)
        for kind, array in (("input", image), ("truth", colorize(truth)), ("prediction", colorize(prediction)),
                            ("overlay", overlay(image, prediction))):
            name = f"sample_{k}_{kind}.png"
            _save_png(array, f"{out}/{name}")
            cells.append(f"<img src='{name}' alt='{kind} {k}' title='{kind}'>")
    return ("<section><h2>Validation samples</h2><p class='muted'>input / ground truth / prediction / overlay"
            "</p><div class='grid'>" + "".join(cells) + "</div></section>")


def review_section(out: str, segmentation: str, limit: int = 12) -> str:
    from apache_beam.io.filesystems import FileSystems
    path = f"{segmentation}/summary.jsonl"
    if not segmentation or not FileSystems.exists(path):
        return ""
    from PIL import Image
    with FileSystems.open(path) as handle:
        lines = [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]
    rows = []
    for k, entry in enumerate(lines[:limit]):
        thumbs = ""
        if not entry["mask"].endswith(".tif"):
            try:
                with FileSystems.open(entry["input"]) as f:
                    image = np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB"))
                with FileSystems.open(entry["mask"]) as f:
                    mask = np.asarray(Image.open(io.BytesIO(f.read())))
                _save_png(image, f"{out}/review_{k}_input.png", 192)
                _save_png(overlay(image, mask), f"{out}/review_{k}_overlay.png", 192)
                thumbs = (f"<img src='review_{k}_input.png' alt='input'>"
                          f"<img src='review_{k}_overlay.png' alt='prediction overlay'>")
            except Exception as e:  # a thumbnail is not worth failing the report
                LOG.warning("no thumbnail for %s: %s", entry["input"], e)
        fractions = ", ".join(f"{n} {v:.0%}" for n, v in entry["class_fraction"].items())
        rows.append(f"<tr><td>{k + 1}</td><td style='text-align:left'>{html.escape(entry['input'])}</td>"
                    f"<td>{entry['review_priority']:.3f}</td><td>{entry['mean_confidence']:.3f}</td>"
                    f"<td style='text-align:left'>{html.escape(fractions)}</td><td class='queue'>{thumbs}</td></tr>")
    return ("<section><h2>Review queue</h2><p class='muted'>Most uncertain first (review priority = mean pixel "
            f"entropy / log C); {len(lines)} images in {html.escape(path)}</p><table><tr><th>#</th><th>input</th>"
            "<th>priority</th><th>confidence</th><th>classes</th><th>thumbnails</th></tr>" + "".join(rows)
            + "</table></section>")


def geotiff_section(out: str, segmentation: str, max_side: int = 1024) -> str:
    from apache_beam.io.filesystems import FileSystems
    if not segmentation:
        return ""
    masks = [m.path for m in FileSystems.match([f"{segmentation}/masks/**.tif"])[0].metadata_list]
    if not masks:
        return ""
    from rasterio.enums import Resampling
    from pipelines.rasters import open_raster
    parts = []
    for k, path in enumerate(sorted(masks)[:4]):
        with open_raster(path) as src:
            scale = max(src.width, src.height) / max_side
            shape = (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
            small = src.read(1, out_shape=shape, resampling=Resampling.nearest)  # overviews when present
            crs = src.crs.to_string() if src.crs else "no CRS"
            size = f"{src.width}x{src.height}"
        _save_png(colorize(small), f"{out}/geotiff_{k}.png", max_side)
        parts.append(f"<p>{html.escape(path)} ({size}, {html.escape(crs)})</p>"
                     f"<img src='geotiff_{k}.png' alt='GeoTIFF mask {k}'>")
    return "<section><h2>GeoTIFF masks</h2>" + "".join(parts) + "</section>"


def build_report(output: str, dataset: str = "", model: str = "", metrics: str = "", segmentation: str = "",
                 data: str = "", samples: int = 6, title: str = "segpipe report") -> str:
    os.makedirs(output, exist_ok=True)
    metrics_doc = _read_json(metrics) if metrics else None
    legend = ""
    classes = _read_json(f"{model}/classes.json") if model else None
    if classes:
        legend = "<p>" + " ".join(
            f"<span style='display:inline-block;width:12px;height:12px;background:rgb{tuple(int(v) for v in palette()[c['index']])}'></span> "
            f"{html.escape(c['name'])}" for c in classes["classes"]) + "</p>"
    body = "".join([dataset_section(output, dataset) if dataset else "", training_section(output, model),
                    metrics_section(output, metrics_doc), samples_section(output, model, data, samples),
                    review_section(output, segmentation), geotiff_section(output, segmentation)])
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{legend}"
            f"{body}</body></html>")
    path = os.path.join(output, "index.html")
    with open(path, "w") as handle:
        handle.write(page)
    return path


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = make_parser().parse_args(argv)
    path = build_report(args.output, args.dataset, args.model, args.metrics, args.segmentation, args.data, args.samples)
    print(path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
