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

from pipelines.common.palette import colorize, overlay, palette
from segcli.report import make_parser
from segformat.masks import IGNORE_INDEX

LOG = logging.getLogger(__name__)
# Classes drawn or listed at most per chart or table (the rest are summarised): what stays
# legible on a laptop screen; a model of 133 or 200 classes is shown by its largest or worst.
MAX_ROWS = 40
MAX_MATRIX = 20
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}img{max-width:100%}.grid img{width:24%;margin:0.2%}.queue{white-space:nowrap}.queue img{height:96px;margin:2px}
.muted{color:#777}section{margin-top:2em}.path{text-align:left;max-width:22em;overflow-wrap:anywhere}
.legend span.swatch{display:inline-block;width:12px;height:12px;margin-left:6px}"""


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
    index = {n: (IGNORE_INDEX if n == "ignore" else k) for k, n in enumerate(pixels)}
    # Present classes only, largest first, as horizontal bars whose labels never overlap: a
    # dataset of 133 COCO panoptic classes stays readable (the rest counted in the title).
    present = sorted((n for n in pixels if pixels[n] > 0), key=lambda n: -pixels[n])
    shown = present[:MAX_ROWS]

    def draw(fig, ax):
        ax.barh(range(len(shown)), [pixels[n] for n in shown], color=[np.array(palette()[index[n]]) / 255
                                                                     for n in shown], edgecolor="black")
        ax.set_yticks(range(len(shown)), shown, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("pixels")
        hidden = len(pixels) - len(shown)
        ax.set_title("class pixel histogram" + (f" ({hidden} more classes absent or smaller)" if hidden else ""))
    _figure(f"{out}/class_histogram.png", draw, size=(7, 1.2 + 0.22 * max(len(shown), 4)))
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
    all_names = list(metrics["per_class_iou"])
    cm_all = np.array(metrics["confusion_matrix"], np.float64)
    # The matrix of the classes with the most true pixels (all of them up to MAX_MATRIX): beyond
    # that a matrix is a dark square of illegible labels.
    keep = sorted(np.argsort(-cm_all.sum(1), kind="stable")[:MAX_MATRIX].tolist())
    names = [all_names[i] for i in keep]
    cm = cm_all[np.ix_(keep, keep)]
    rows = cm / np.maximum(cm_all[keep].sum(1, keepdims=True), 1)

    def draw(fig, ax):
        im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(names)):
            for j in range(len(names)):
                if len(names) <= 12 or rows[i, j] >= 0.01:
                    ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center",
                            color="white" if rows[i, j] > 0.5 else "black", fontsize=7)
        fig.colorbar(im, ax=ax)
        title = "confusion matrix (rows normalised)"
        ax.set_title(title if len(keep) == len(all_names) else
                     f"{title}: the {len(keep)} classes with most true pixels of {len(all_names)}", fontsize=9)
    side = 4.5 + 0.3 * len(names)
    _figure(f"{out}/confusion_matrix.png", draw, size=(side + 1, side))
    columns = ("per_class_iou", "per_class_precision", "per_class_recall", "per_class_f1")

    def cell(key, name):
        value = metrics.get(key, {}).get(name)
        return "-" if value is None else f"{value:.3f}"
    # Classes seen in truth or prediction only, worst IoU first: what to look at comes first.
    listed = sorted((n for n in all_names if metrics["per_class_iou"].get(n) is not None),
                    key=lambda n: metrics["per_class_iou"][n])
    absent = len(all_names) - len(listed)
    table = "".join(f"<tr><td style='text-align:left'>{html.escape(n)}</td>"
                    + "".join(f"<td>{cell(key, n)}</td>" for key in columns) + "</tr>" for n in listed)
    if absent:
        table += (f"<tr><td colspan='5' class='muted' style='text-align:left'>{absent} classes neither in the "
                  "truth nor predicted</td></tr>")
    summary = ", ".join(f"{k.replace('_', ' ')} <b>{metrics[k]:.3f}</b>" for k in
                        ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou"))
    confused = ""
    if len(keep) < len(all_names):  # the matrix shows only some classes: the worst confusions of all
        shares = cm_all / np.maximum(cm_all.sum(1, keepdims=True), 1)
        np.fill_diagonal(shares, 0)
        pairs = [divmod(int(k), len(all_names)) for k in np.argsort(-shares, axis=None)[:10]]
        confused = ("<p>Most confused (share of the true class's pixels): " + "; ".join(
            f"{html.escape(all_names[i])} &rarr; {html.escape(all_names[j])} {shares[i, j]:.1%}"
            for i, j in pairs if shares[i, j] > 0) + "</p>")
    return (f"<section><h2>Evaluation</h2><p>{summary}</p>{road_paragraph(metrics.get('road'))}{confused}<table><tr>"
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
        top = sorted(((v, n) for n, v in entry["class_fraction"].items() if v > 0), reverse=True)
        fractions = ", ".join(f"{n} {v:.0%}" for v, n in top[:4]) + (f", +{len(top) - 4} more" if len(top) > 4 else "")
        rows.append(f"<tr><td>{k + 1}</td><td class='path'>{html.escape(entry['input'])}</td>"
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
    from pipelines.common.rasters import open_raster
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


def loop_section(loop: str) -> str:
    """The labeling loop's round (pipelines.labeling.loop): held-back mean IoU per arm."""
    doc = _read_json(loop) if loop else None
    if not doc:
        return ""
    rows = [("the trained model", doc["base"]),
            (f"+ {doc['labeled']} most uncertain scenes, corrected", doc["uncertain"]),
            (f"+ {doc['labeled']} random scenes, corrected", doc["random"]),
            ("no new labels (the same extra epochs)", doc["no_new_labels"])]
    table = "".join(f"<tr><td style='text-align:left'>{html.escape(name)}</td><td>{value:.3f}</td>"
                    f"<td>{value - doc['base']:+.3f}</td></tr>" for name, value in rows)
    return (f"<section><h2>Labeling loop</h2><p>One round: the model segmented {doc['pool']} unlabeled scenes; "
            f"{doc['labeled']} were picked by <code>segpipe review</code>, their true masks went through a Label "
            f"Studio export and <code>segpipe dataset labelstudio</code>, and the model was fine-tuned for "
            f"{doc['epochs']} epochs. Mean IoU on {doc.get('test_images', '?')} held-back scenes:</p><table><tr>"
            f"<th>arm</th><th>mean IoU</th><th>change</th></tr>{table}</table></section>")


def build_report(output: str, dataset: str = "", model: str = "", metrics: str = "", segmentation: str = "",
                 data: str = "", samples: int = 6, title: str = "segpipe report", loop: str = "") -> str:
    os.makedirs(output, exist_ok=True)
    metrics_doc = _read_json(metrics) if metrics else None
    legend = ""
    classes = _read_json(f"{model}/classes.json") if model else None
    if classes:
        entries = classes["classes"]
        if len(entries) > MAX_ROWS and metrics_doc:  # many classes: those the evaluation saw
            seen = {n for n, v in metrics_doc.get("per_class_iou", {}).items() if v is not None}
            entries = [c for c in entries if c["name"] in seen]
        legend = "<p class='legend'>" + " ".join(
            f"<span class='swatch' style='background:rgb{tuple(int(v) for v in palette()[c['index']])}'></span> "
            f"{html.escape(c['name'])}" for c in entries) + (
            f" <span class='muted'>({len(classes['classes']) - len(entries)} classes not in the evaluation)</span>"
            if len(entries) < len(classes["classes"]) else "") + "</p>"
    body = "".join([dataset_section(output, dataset) if dataset else "", training_section(output, model),
                    metrics_section(output, metrics_doc), samples_section(output, model, data, samples),
                    review_section(output, segmentation), geotiff_section(output, segmentation),
                    loop_section(loop)])
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
    path = build_report(args.output, args.dataset, args.model, args.metrics, args.segmentation, args.data, args.samples,
                        loop=args.loop)
    print(path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
