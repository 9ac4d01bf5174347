"""``segpipe segment``: batch segmentation's settings and command line (the job: ``pipelines.batch_segment``)."""
from __future__ import annotations

import argparse
import dataclasses

from segcli import tta
from segmodel.architectures import INFERENCE_PRECISIONS

# The vector outputs' formats: file suffix and OGR driver.
VECTOR_FORMATS = {"geojson": (".geojson", "GeoJSON"), "gpkg": (".gpkg", "GPKG"), "fgb": (".fgb", "FlatGeobuf")}
# --scores: none, the top class's probability, or that and every class's (SegmentConfig.scores).
SCORE_OUTPUTS = ("", "top", "all")
DESCRIPTION = "Batch segmentation: images or GeoTIFFs -> RunInference -> masks, summaries, COCO labels."


def default_overlap(tile_size: int) -> int:
    """The tile overlap when none is given (SegmentConfig.tile_overlap says why)."""
    return min(64, tile_size // 4)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """Batch segmentation's settings; the command line's defaults come from here."""
    model: str
    output_dir: str
    class_names: tuple
    # NAME@DATE-HASH of model.keras (segmodel.exported.model_version), filled in at launch:
    # written to OUT/classes.json, where segpipe review takes the pre-labels' model_version from.
    model_version: str = ""
    # The training crop size: the net sees the context it was trained on.
    tile_size: int = 512
    # Pixels neighbouring tiles share, blended away; None: min(64, tile_size // 4), two fc7
    # strides of context at each edge without letting the overlap eat a small tile.
    tile_overlap: int | None = None
    # Tiles per model call: what a GPU of 16-24 GB holds for FCN-8s at 512 px with room to spare.
    batch_size: int = 8
    # Tiles' worth of chunks handed to the model at once (several photos or one raster chunk):
    # enough to pool tiles across photos and overlap reading and writing with the model.
    batch_tiles: int = 48
    bands: str | None = None
    # Largest side of a raster chunk: a 4096-px chunk is ~80 tiles (~1 s of a GPU); its blend
    # buffer is one tile row of its width (512 x 4608 x C x 4 bytes, 38 MB at 4 classes), and the
    # tile row/column it shares with each neighbour is ~11 % recomputed per direction.
    chunk_size: int = 4096
    skip_existing: bool = False
    overlays: bool = False
    # "top": OUT/scores/REL.png|.tif, the top class's probability x 255 per pixel (uint8, 0 =
    # nodata), what a reviewer or a GIS analyst thresholds; "all": also OUT/probabilities/REL.tif,
    # one uint8 band per class (C bytes a pixel: for a soft label, a class-specific threshold or an
    # ensemble). "" (default): neither (one or two more files per input).
    scores: str = ""
    # OUT/vectors/REL.gpkg and the job's OUT/segments.gpkg: a polygon per connected region of each
    # class (the background aside), in the raster's CRS (photos: pixels), merged across chunk borders.
    vectors: bool = False
    # Regions under this many pixels are left out of the vectors (0: every region).
    vector_min_area: int = 0
    # Douglas-Peucker tolerance in pixels, topology-preserving (0: the exact pixel outlines).
    vector_simplify: float = 0.0
    # GeoPackage: the OGC format GIS tools open first, one file with a layer per coordinate system
    # for the job-wide layer (GeoJSON and FlatGeobuf hold one: a file per system); written by fiona.
    vector_format: str = "gpkg"
    # The classes that get polygons, by name, comma-separated; "" (default): every class but the
    # background (the land around a building is rarely wanted as a polygon).
    vector_classes: str = ""
    # float32 by default; bfloat16 measured 1.96x faster for FCN-8s on this project's AVX512-BF16
    # CPUs with 0.024 % of pixels changing class on the demo model (README).
    precision: str = "float32"
    # Test-time augmentation (segmodel.tta): the image itself by default, since every extra view
    # is a whole forward pass; scales and flips are chosen on validation data per model
    # (docs/model.md), e.g. (1, 1.25) with flips for thin classes at 5.1x the compute.
    tta_scales: tuple = (1.0,)
    tta_flip: bool = False
    large_model: bool = False
    model_copies: int = 1

    def __post_init__(self):
        if self.tile_overlap is None:
            object.__setattr__(self, "tile_overlap", default_overlap(self.tile_size))
        problems = []
        if self.tile_size < 32:
            problems.append(f"tile_size must be at least 32 (the FCN's stride), got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size:
            problems.append(f"tile_overlap must be in [0, tile_size), got {self.tile_overlap}")
        if self.batch_size < 1 or self.batch_tiles < 1 or self.model_copies < 1:
            problems.append("batch_size, batch_tiles and model_copies must be at least 1")
        if self.chunk_size < self.tile_size:
            problems.append(f"chunk_size ({self.chunk_size}) must be at least tile_size ({self.tile_size})")
        unknown = [n for n in self.vector_classes.split(",") if n and n not in self.class_names]
        if unknown:
            problems.append(f"vector_classes names {unknown}, not classes of the model ({', '.join(self.class_names)})")
        if self.vector_format not in VECTOR_FORMATS:
            problems.append(f"vector_format must be one of {tuple(VECTOR_FORMATS)}, got {self.vector_format!r}")
        if self.vector_min_area < 0 or self.vector_simplify < 0:
            problems.append("vector_min_area and vector_simplify must not be negative")
        if self.scores not in SCORE_OUTPUTS:
            problems.append(f"scores must be one of {SCORE_OUTPUTS}, got {self.scores!r}")
        if self.precision not in INFERENCE_PRECISIONS:
            problems.append(f"precision must be one of {INFERENCE_PRECISIONS}, got {self.precision!r}")
        try:
            object.__setattr__(self, "tta_scales", tta.as_scales(self.tta_scales))
        except argparse.ArgumentTypeError as e:
            problems.append(str(e))
        if len(self.class_names) < 1:
            problems.append("the model has no classes")
        if problems:
            raise ValueError("; ".join(problems))



def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(SegmentConfig)}
    parser = argparse.ArgumentParser(prog="segpipe segment", description=DESCRIPTION,
                                     epilog="Flags not listed here go to Beam (--runner, --project, ...).")
    parser.add_argument("--model", required=True, help="MODEL folder with model.keras and classes.json, or a "
                        ".keras file (local or gs://)")
    parser.add_argument("--input", required=True, help="glob of JPEG/PNG/GeoTIFF inputs (local or gs://)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tile_size", type=int, default=defaults["tile_size"])
    parser.add_argument("--tile_overlap", type=int, default=defaults["tile_overlap"],
                        help="pixels shared by neighbouring tiles; default min(64, tile_size // 4)")
    parser.add_argument("--batch_size", type=int, default=defaults["batch_size"], help="tiles per model call")
    parser.add_argument("--batch_tiles", type=int, default=defaults["batch_tiles"],
                        help="tiles' worth of photos or raster chunks handed to the model at once")
    parser.add_argument("--bands", default=defaults["bands"], help="GeoTIFF bands as RGB, 1-based, e.g. 4,3,2")
    parser.add_argument("--chunk_size", type=int, default=defaults["chunk_size"],
                        help="largest side of a raster chunk (rasters are cut into a grid of chunks)")
    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=defaults["precision"],
                        help="bfloat16: ~2x faster on CPUs with AVX512-BF16/AMX, a few pixels differ")
    tta.add_arguments(parser)
    parser.add_argument("--skip_existing", action="store_true", help="only segment inputs without outputs")
    parser.add_argument("--overlays", action="store_true", help="also write OUT/overlays/REL.jpg")
    parser.add_argument("--vectors", action="store_true", help="also write OUT/segments.gpkg (the job's layer) "
                        "and OUT/vectors/REL.gpkg: a polygon per connected region of each class, in the raster's "
                        "CRS, merged across chunks")
    parser.add_argument("--vector_min_area", type=int, default=defaults["vector_min_area"],
                        help="regions under this many pixels are left out of the vectors")
    parser.add_argument("--vector_classes", default="", help="classes to polygonize, by name, comma-separated "
                        "(default: every class but the background)")
    parser.add_argument("--vector_format", choices=tuple(VECTOR_FORMATS), default=defaults["vector_format"],
                        help="the polygon layers' format: GeoPackage (default), GeoJSON or FlatGeobuf")
    parser.add_argument("--vector_simplify", type=float, default=defaults["vector_simplify"],
                        help="simplification tolerance in pixels (topology-preserving); 0: exact outlines")
    parser.add_argument("--scores", nargs="?", const="top", default=defaults["scores"], choices=SCORE_OUTPUTS[1:],
                        help="also write OUT/scores/REL.png|.tif: the top class's probability x 255 (uint8; a COG "
                        "for GeoTIFFs, 0 where the input is nodata); --scores all: also OUT/probabilities/REL.tif, "
                        "one band per class")
    parser.add_argument("--large_model", action="store_true",
                        help="one model per machine shared by all worker processes (GPU workers)")
    parser.add_argument("--model_copies", type=int, default=defaults["model_copies"],
                        help="models per machine: one per GPU")
    return parser
