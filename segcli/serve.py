"""``segpipe serve labelstudio``: the Label Studio ML backend's settings and command line (the
server: ``pipelines.labeling.backend``)."""
from __future__ import annotations

import argparse
import dataclasses

from segcli import tta
from segcli.segment import SegmentConfig
from segformat.limits import DEFAULT_MAX_PIXELS

DESCRIPTION = ("A Label Studio ML backend: pre-labels (BrushLabels) for the tasks Label Studio asks about, "
               "and a queue of the annotations people submit.")
# Where a user's environment holds the secrets (never a flag: flags show in the process list).
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
BASIC_AUTH_ENV = "SEGPIPE_BACKEND_AUTH"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackendConfig:
    model: str
    # A segpipe segment output over the project's images: tasks whose image it holds are answered
    # from its masks in milliseconds (Label Studio gives up on a prediction after ML_TIMEOUT_PREDICT,
    # 100 s by default, so big images are segmented beforehand, not on the request path).
    segmentation: str = ""
    # Loopback only unless asked: the server answers anyone who can reach it.
    host: str = "127.0.0.1"
    # The port label-studio-ml-backend's examples use, what Label Studio's docs connect to.
    port: int = 9090
    # Annotation events from Label Studio's webhook: one file per task and export.json (Label
    # Studio's JSON export format), which segpipe dataset labelstudio reads.
    annotations_dir: str = "labelstudio_annotations"
    # Label Studio's LOCAL_FILES_DOCUMENT_ROOT: local-files URLs (/data/local-files/?d=PATH) name
    # files under it; its default is the file system's root.
    local_files_root: str = "/"
    # Label Studio's address, for tasks whose image URL is relative (/data/upload/...); by default
    # the hostname Label Studio sends in /setup.
    label_studio_url: str = ""
    # A task's image, encoded: larger downloads are refused (a 50 MB PNG is ~17 megapixels).
    max_image_bytes: int = 50 << 20
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    # A request body: /predict for a thousand tasks is ~0.5 MB; a webhook with a large brush
    # annotation a few MB.
    max_request_bytes: int = 32 << 20
    # Tiling as segpipe segment's (its reasons there).
    tile_size: int = SegmentConfig.__dataclass_fields__["tile_size"].default
    batch_size: int = SegmentConfig.__dataclass_fields__["batch_size"].default
    # Test-time augmentation of the masks the model makes on the request path, as segpipe
    # segment's (its reasons there; each view is a whole forward pass a labeler waits for).
    tta_scales: tuple = SegmentConfig.__dataclass_fields__["tta_scales"].default
    tta_flip: bool = False

    def __post_init__(self):
        problems = []
        try:
            object.__setattr__(self, "tta_scales", tta.as_scales(self.tta_scales))
        except argparse.ArgumentTypeError as e:
            problems.append(str(e))
        if not 0 <= self.port < 65536:
            problems.append(f"port must be in 0..65535 (0: any free port), got {self.port}")
        if min(self.max_image_bytes, self.max_image_pixels, self.max_request_bytes, self.batch_size) < 1:
            problems.append("max_image_bytes, max_image_pixels, max_request_bytes and batch_size must be positive")
        if self.tile_size < 32:
            problems.append(f"tile_size must be at least 32 (the FCN's stride), got {self.tile_size}")
        if problems:
            raise ValueError("; ".join(problems))


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(BackendConfig)}
    parser = argparse.ArgumentParser(
        prog="segpipe serve labelstudio", description=DESCRIPTION,
        epilog=f"Connect it in Label Studio: project Settings > Model > Connect Model, URL http://HOST:PORT. "
               f"Environment: {API_KEY_ENV} (a Label Studio access token, to download uploaded images), "
               f"{BASIC_AUTH_ENV}=USER:PASSWORD (require basic auth, as Label Studio's connection form sends it).")
    parser.add_argument("--model", required=True, help="MODEL folder with model.keras and classes.json (local or gs://)")
    parser.add_argument("--segmentation", default="", help="a segpipe segment output folder to answer from")
    parser.add_argument("--host", default=defaults["host"])
    parser.add_argument("--port", type=int, default=defaults["port"])
    parser.add_argument("--annotations_dir", default=defaults["annotations_dir"],
                        help="where annotation events go (export.json for segpipe dataset labelstudio)")
    parser.add_argument("--local_files_root", default=defaults["local_files_root"],
                        help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    parser.add_argument("--label_studio_url", default="", help="for relative image URLs; default: from /setup")
    parser.add_argument("--max_image_bytes", type=int, default=defaults["max_image_bytes"])
    parser.add_argument("--max_image_pixels", type=int, default=defaults["max_image_pixels"])
    parser.add_argument("--max_request_bytes", type=int, default=defaults["max_request_bytes"])
    parser.add_argument("--tile_size", type=int, default=defaults["tile_size"])
    parser.add_argument("--batch_size", type=int, default=defaults["batch_size"], help="tiles per model call")
    tta.add_arguments(parser)
    return parser
