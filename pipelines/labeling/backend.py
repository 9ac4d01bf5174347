"""``segpipe serve labelstudio``: an ML backend speaking Label Studio's protocol.

    segpipe serve labelstudio --model MODEL [--segmentation SEG_OUT] [--port 9090]

Label Studio (``label_studio/ml/api_connector.py``) calls:

* ``GET /health`` when a model is connected and before each prediction run: ``{"status": "UP"}``;
* ``POST /setup`` with the project's labeling config (``schema``), its host name and an access
  token: answered with ``{"model_version": NAME@DATE-HASH}``;
* ``POST /predict`` with ``{"tasks": [...], "label_config": ...}`` when a task is opened or
  "Retrieve Predictions" runs over a selection: ``{"results": [one item per task, in order]}``,
  each a prediction ``{"model_version", "score", "result": [BrushLabels regions]}``, or, for a
  task that cannot be predicted (its image unreadable, a label the project lacks), ``{"task": id,
  "error": "..."}``: Label Studio stores no prediction for it and logs the item, the other tasks
  keep theirs, and the server goes on;
* ``POST /webhook`` with every project event (Label Studio creates this webhook when the model is
  connected): ``ANNOTATION_CREATED`` and ``ANNOTATION_UPDATED`` put the task with its annotation
  into the queue (``ANNOTATIONS_DIR/tasks/ID.json`` and ``export.json``, Label Studio's JSON
  export format), ``ANNOTATIONS_DELETED`` takes them out, ``START_TRAINING`` is recorded in
  ``training_requests.jsonl`` (fine-tuning is a separate run: ``segpipe dataset labelstudio
  --export ANNOTATIONS_DIR/export.json`` then ``segpipe train``; a training run has no place on a
  request thread). ``POST /train`` (Label Studio's older training call) is recorded the same way.

Predictions: the regions of the model's mask, one per class present, named by class and matched
to the project's BrushLabels by name. A task whose image a ``--segmentation`` output holds (same
file name) is answered from its mask; any other is segmented on the request thread (one at a
time: the model is shared) with the same tiling, preprocessing and model as ``segpipe segment``.
Images are read from Label Studio's URLs: local-files URLs under ``--local_files_root``, ``gs://``
through Beam's filesystems, ``http(s)`` and Label Studio's own relative URLs from Label Studio
with the access token; a download over ``--max_image_bytes`` or an image over
``--max_image_pixels`` is refused. One log line per request.
"""
from __future__ import annotations

import base64
import dataclasses
import hmac
import http.server
import io
import json
import logging
import os
import posixpath
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree

import numpy as np

from segcli.serve import API_KEY_ENV, BASIC_AUTH_ENV, BackendConfig, make_parser
from segformat import label_studio
from segformat.masks import background_index

LOG = logging.getLogger(__name__)
# A body larger than --max_request_bytes is still read (and dropped) up to this size, so the
# client reads the 413 instead of a broken pipe; beyond it the connection is closed unread.
DRAIN_LIMIT = 256 << 20


class TaskError(Exception):
    """A task that cannot be predicted: its message goes back to Label Studio in the task's item."""


@dataclasses.dataclass(frozen=True)
class BrushTarget:
    """Where pre-labels go in a labeling config: the BrushLabels tag's name, the Image tag it
    labels, the task data key holding the image URL, and the label values."""
    from_name: str
    to_name: str
    data_key: str
    labels: tuple


def brush_target(label_config: str) -> BrushTarget:
    """The first BrushLabels tag of a Label Studio labeling config and its Image; ValueError
    when there is none (a config for boxes or polygons cannot hold brush pre-labels)."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as error:
        raise ValueError(f"the labeling config is not XML: {error}") from None
    brushes = [e for e in root.iter() if e.tag == "BrushLabels"]
    if not brushes:
        raise ValueError("the labeling config has no <BrushLabels>: segpipe's pre-labels are brush masks")
    brush = brushes[0]
    to_name = brush.get("toName", "")
    images = {e.get("name"): e for e in root.iter() if e.tag == "Image"}
    if to_name not in images:
        raise ValueError(f"<BrushLabels name={brush.get('name')!r}> labels {to_name!r}, which is not an <Image>")
    value = images[to_name].get("value", "")
    if not value.startswith("$"):
        raise ValueError(f"<Image name={to_name!r}> takes its URL from {value!r}, not from a task field ($name)")
    labels = tuple(e.get("value") for e in brush.iter() if e.tag == "Label" and e.get("value") is not None)
    return BrushTarget(brush.get("name", ""), to_name, value[1:], labels)


def regions(mask: np.ndarray, class_names, target: BrushTarget) -> list:
    """The mask's BrushLabels regions for ``target``; TaskError when the mask holds a class the
    project has no label for (a partial pre-label would pass for a complete one)."""
    skip = (0,) if background_index(class_names) is not None else ()
    present = [class_names[i] for i in np.unique(mask).tolist() if i < len(class_names) and i not in skip]
    missing = [name for name in present if name not in target.labels]
    if missing:
        raise TaskError(f"the model predicts {missing}, which the project's <BrushLabels name="
                        f"{target.from_name!r}> does not list (it has {list(target.labels)})")
    return label_studio.brush_results(mask, class_names, skip, target.from_name, target.to_name)


class ImageReader:
    """A task image's bytes from the URL Label Studio gives, within a size limit."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self.label_studio_url = config.label_studio_url.rstrip("/")
        self.token = os.environ.get(API_KEY_ENV, "")

    def configure(self, hostname: str, access_token: str) -> None:
        """What Label Studio's /setup tells: its address and a token (flags and the environment win)."""
        if not self.config.label_studio_url and hostname:
            self.label_studio_url = hostname.rstrip("/")
        if not os.environ.get(API_KEY_ENV) and access_token:
            self.token = access_token

    def read(self, url: str) -> bytes:
        if not isinstance(url, str) or not url:
            raise TaskError("the task has no image URL")
        if self.label_studio_url and url.startswith(self.label_studio_url + "/"):
            url = url[len(self.label_studio_url):]  # Label Studio's own URL, made relative
        if url.startswith(label_studio.LOCAL_FILES_URL):  # a file of Label Studio's local-files storage
            from pipelines.common.images import ImageError, join_under_root
            relative = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("d", [""])[0]
            try:
                path = join_under_root(self.config.local_files_root, relative)
            except ImageError as error:
                raise TaskError(f"{url}: {error.detail}") from None
            return self._limited(open(path, "rb"), url)
        if url.startswith("gs://"):
            from apache_beam.io.filesystems import FileSystems
            return self._limited(FileSystems.open(url), url)
        headers = {}
        if url.startswith("/"):  # served by Label Studio (uploaded files, cloud storages' proxies)
            if not self.label_studio_url:
                raise TaskError(f"{url} is relative to Label Studio, whose address is unknown (--label_studio_url)")
            url = self.label_studio_url + url
            if self.token:  # only Label Studio gets the token
                headers["Authorization"] = self._authorization()
        if url.startswith(("http://", "https://")):
            return self._limited(urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30), url)
        raise TaskError(f"cannot read the image URL {url!r} (local-files, gs://, http(s) or Label Studio's own)")

    def _authorization(self) -> str:
        """The header for Label Studio: a legacy token as ``Token``; a personal access token (a
        JWT refresh token) exchanged at /api/token/refresh for an access token, as ``Bearer``."""
        if self.token.count(".") != 2:
            return f"Token {self.token}"
        request = urllib.request.Request(f"{self.label_studio_url}/api/token/refresh", method="POST",
                                         data=json.dumps({"refresh": self.token}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return "Bearer " + json.loads(response.read())["access"]

    def _limited(self, handle, url: str) -> bytes:
        limit = self.config.max_image_bytes
        with handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise TaskError(f"{url}: the image is larger than --max_image_bytes ({limit} bytes)")
        return data


class Predictor:
    """Masks for task images: from a segmentation's masks by file name, else from the model."""

    def __init__(self, config: BackendConfig):
        from apache_beam.io.filesystems import FileSystems

        from pipelines.segment.inference import model_identity
        self.config = config
        self.class_names, self.model_version = model_identity(config.model)
        self.precomputed = {}
        if config.segmentation:
            seg = config.segmentation.rstrip("/")
            with FileSystems.open(f"{seg}/summary.jsonl") as handle:
                for line in handle.read().decode().splitlines():
                    if line.strip():
                        record = json.loads(line)
                        if not record["mask"].endswith(".tif"):
                            self.precomputed[posixpath.basename(record["input"])] = record
        self._segmenter = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """The model and its segmenter, once (a test may hand make_server a predictor already loaded)."""
        if self._segmenter is not None:
            return
        from apache_beam.io.filesystems import FileSystems

        from segcli.segment import default_overlap
        from segmodel.predict import segmenter_for
        tile = self.config.tile_size
        self._segmenter = segmenter_for(self.config.model, len(self.class_names), tile, default_overlap(tile),
                                        self.config.batch_size, opener=FileSystems.open,
                                        tta_scales=self.config.tta_scales, tta_flip=self.config.tta_flip)

    def predict(self, file_name: str, read) -> tuple:
        """(uint8 mask, mean confidence, where it came from) for the image ``read()`` returns."""
        from apache_beam.io.filesystems import FileSystems
        from PIL import Image

        from pipelines.common import rasters
        from pipelines.segment.chunks import PhotoJob
        record = self.precomputed.get(file_name)
        if record is not None:
            with FileSystems.open(record["mask"]) as handle:
                return np.asarray(Image.open(io.BytesIO(handle.read()))), record["mean_confidence"], "segmentation"
        data = read()
        try:
            image = rasters.decode_image(data, self.config.max_image_pixels)
        except Exception as error:  # not an image, damaged, over the pixel limit
            raise TaskError(f"{file_name}: {getattr(error, 'detail', None) or error}") from None
        with self._lock:
            ((mask, stats, error),) = self._segmenter.segment([PhotoJob(image)])
        if error is not None:
            raise TaskError(f"{file_name}: {error}")
        return mask, float(np.sum(stats["confidence"]) / max(int(np.sum(stats["pixels"])), 1)), "model"


class AnnotationQueue:
    """The annotations people submitted, as Label Studio's JSON export (one task per file, the
    latest annotation of each task), rewritten atomically after every event. The task files are
    read once, when the first event comes (a restarted server goes on with the queue it left);
    after that the export is written from memory."""

    def __init__(self, folder: str):
        self.folder = folder.rstrip("/")
        self._lock = threading.Lock()
        self._items = None  # task id -> export item, once read

    def _task_file(self, task_id) -> str:
        return f"{self.folder}/tasks/{int(task_id)}.json"

    def put(self, task: dict, annotation: dict) -> None:
        from pipelines.common.storage import write_atomic
        item = {"id": task["id"], "data": task.get("data", {}), "annotations": [annotation]}
        with self._lock:
            items = self._loaded()
            write_atomic(self._task_file(task["id"]), json.dumps(item).encode(), "application/json")
            items[item["id"]] = item
            self._rewrite()

    def remove(self, annotation_ids) -> int:
        from apache_beam.io.filesystems import FileSystems
        with self._lock:
            items = self._loaded()
            gone = [task_id for task_id, item in items.items()
                    if any(a.get("id") in annotation_ids for a in item["annotations"])]
            for task_id in gone:
                FileSystems.delete([self._task_file(task_id)])
                del items[task_id]
            self._rewrite()
        return len(gone)

    def note_training(self, event: dict) -> None:
        from apache_beam.io.filesystems import FileSystems

        from pipelines.common.storage import write_atomic
        path = f"{self.folder}/training_requests.jsonl"
        with self._lock:
            previous = b""
            if FileSystems.exists(path):
                with FileSystems.open(path) as handle:
                    previous = handle.read()
            write_atomic(path, previous + (json.dumps(event) + "\n").encode(), "application/jsonl")

    def items(self) -> list:
        return sorted(self._loaded().values(), key=lambda item: item["id"])

    def _loaded(self) -> dict:
        if self._items is None:
            from apache_beam.io.filesystems import FileSystems
            self._items = {}
            for metadata in FileSystems.match([f"{self.folder}/tasks/*.json"])[0].metadata_list:
                with FileSystems.open(metadata.path) as handle:
                    item = json.loads(handle.read())
                self._items[item["id"]] = item
        return self._items

    def _rewrite(self) -> None:
        from pipelines.common.storage import write_atomic
        write_atomic(f"{self.folder}/export.json", json.dumps(self.items()).encode(), "application/json")


class Backend:
    """The protocol without HTTP: each method takes the request's JSON and returns the reply's."""

    def __init__(self, config: BackendConfig, predictor: Predictor, queue: AnnotationQueue):
        self.config, self.predictor, self.queue = config, predictor, queue
        self.reader = ImageReader(config)

    def health(self) -> dict:
        return {"status": "UP", "model_version": self.predictor.model_version, "model_dir": self.config.model}

    def setup(self, body: dict) -> dict:
        self.reader.configure(body.get("hostname") or "", body.get("access_token") or "")
        if body.get("schema"):
            brush_target(body["schema"])  # a project this backend cannot serve is told at once
        return {"model_version": self.predictor.model_version}

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise ValueError("the request has no list of tasks")
        target = brush_target(body.get("label_config") or "")
        results = []
        for task in tasks:
            results.append(self.predict_task(task, target))
        return {"results": results, "model_version": self.predictor.model_version}

    def predict_task(self, task: dict, target: BrushTarget) -> dict:
        task_id = task.get("id") if isinstance(task, dict) else None
        started = time.perf_counter()
        try:
            if not isinstance(task, dict):
                raise TaskError("a task is not a JSON object")
            url = (task.get("data") or {}).get(target.data_key)
            if not isinstance(url, str) or not url:
                raise TaskError(f"the task has no image URL in data.{target.data_key}")
            name = label_studio.image_file_name(url)
            mask, score, source = self.predictor.predict(name, lambda: self.reader.read(url))
            result = regions(mask, self.predictor.class_names, target)
        except (TaskError, OSError) as error:
            LOG.warning("task %s: %s", task_id, error)
            return {"task": task_id, "error": str(error), "model_version": self.predictor.model_version}
        LOG.info("task %s: %s from the %s, %d regions, %.0f ms", task_id, name, source, len(result),
                 1000 * (time.perf_counter() - started))
        return {"model_version": self.predictor.model_version, "score": float(score), "result": result}

    def webhook(self, body: dict) -> dict:
        action = body.get("action", "")
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            task, annotation = body.get("task"), body.get("annotation")
            if not isinstance(task, dict) or not isinstance(annotation, dict) or "id" not in task:
                raise ValueError(f"{action} without its task and annotation (is the webhook's payload on?)")
            self.queue.put(task, annotation)
            return {"action": action, "queued": task["id"]}
        if action == "ANNOTATIONS_DELETED":
            ids = {a.get("id") for a in body.get("annotations") or [] if isinstance(a, dict)}
            return {"action": action, "removed": self.queue.remove(ids)}
        if action == "START_TRAINING":
            self.queue.note_training({"action": action, "project": (body.get("project") or {}).get("id"),
                                      "time": time.time()})
            return {"action": action, "status": "recorded", "next": "segpipe dataset labelstudio --export "
                    f"{self.queue.folder}/export.json ..., then segpipe train"}
        return {"action": action, "status": "ignored"}

    def train(self, body: dict) -> dict:
        self.queue.note_training({"action": "train", "project": body.get("project"), "time": time.time()})
        return {"status": "recorded"}


def make_handler(backend: Backend, auth: str):
    """The HTTP glue: routes, body limit, basic auth, JSON in and out, one log line a request."""
    expected = ("Basic " + base64.b64encode(auth.encode()).decode()) if auth else ""
    routes = {("GET", "/"): lambda body: backend.health(), ("GET", "/health"): lambda body: backend.health(),
              ("POST", "/setup"): backend.setup, ("POST", "/predict"): backend.predict,
              ("POST", "/webhook"): backend.webhook, ("POST", "/train"): backend.train}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # one line per request comes from _answer
            pass

        def _answer(self, status: int, reply, started: float) -> None:
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            LOG.info("%s %s %d %d bytes %.0f ms", self.command, self.path, status, len(data),
                     1000 * (time.perf_counter() - started))

        def _handle(self):
            started = time.perf_counter()
            path = urllib.parse.urlparse(self.path).path.rstrip("/") or "/"
            length = int(self.headers.get("Content-Length") or 0)
            if expected and not hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                self._drain(length)
                return self._answer(401, {"error": "basic authentication required"}, started)
            route = routes.get((self.command, path))
            if route is None:
                self._drain(length)
                return self._answer(404, {"error": f"no {self.command} {path}"}, started)
            if length > backend.config.max_request_bytes:
                self._drain(length)  # read (and dropped) so that the client hears the answer
                return self._answer(413, {"error": f"the request is {length} bytes, over --max_request_bytes "
                                                   f"({backend.config.max_request_bytes})"}, started)
            try:
                body = json.loads(self.rfile.read(length) or b"{}") if self.command == "POST" else {}
                if not isinstance(body, dict):
                    raise ValueError("the request body is not a JSON object")
                return self._answer(201 if path == "/webhook" else 200, route(body), started)
            except ValueError as error:
                return self._answer(400, {"error": str(error)}, started)
            except Exception as error:  # a bug or storage failure: told, and the server goes on
                LOG.exception("%s %s failed", self.command, path)
                return self._answer(500, {"error": f"{type(error).__name__}: {error}"}, started)

        def _drain(self, length: int) -> None:
            """Reads a body that will not be used, up to DRAIN_LIMIT; past it the connection closes."""
            if length > DRAIN_LIMIT:
                self.close_connection = True
                return
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 20))
                if not chunk:
                    break
                length -= len(chunk)

        do_GET = do_POST = _handle

    return Handler


def make_server(config: BackendConfig, predictor: Predictor | None = None) -> http.server.ThreadingHTTPServer:
    predictor = predictor or Predictor(config)
    predictor.load()
    backend = Backend(config, predictor, AnnotationQueue(config.annotations_dir))
    server = http.server.ThreadingHTTPServer((config.host, config.port),
                                             make_handler(backend, os.environ.get(BASIC_AUTH_ENV, "")))
    server.daemon_threads = True
    server.backend = backend
    return server


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        config = BackendConfig(**vars(args))
    except ValueError as e:
        raise SystemExit(f"segpipe serve labelstudio: {e}") from None
    auth = os.environ.get(BASIC_AUTH_ENV, "")
    if auth and ":" not in auth:
        raise SystemExit(f"segpipe serve labelstudio: {BASIC_AUTH_ENV} must be USER:PASSWORD")
    server = make_server(config)
    host, port = server.server_address[:2]
    print(f"segpipe serve labelstudio: {server.backend.predictor.model_version} on http://{host}:{port} "
          f"({len(server.backend.predictor.precomputed)} images precomputed; annotations -> "
          f"{config.annotations_dir}/export.json)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
