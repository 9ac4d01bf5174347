"""segpipe serve labelstudio without Label Studio: the protocol over real HTTP on 127.0.0.1, the
predictions decoded with Label Studio's own decoder (label-studio-sdk) against segpipe segment's
masks of the same images, bad tasks answered one by one, the webhook's queue read back by
segpipe dataset labelstudio. (tests/test_label_studio_server.py runs it under a real Label Studio.)"""
from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from pipelines import batch_segment
from pipelines.review import build_batch
from segcli.review import ReviewConfig
from tests.helpers import COLOR_NAMES as NAMES, make_color_model, read_records

CONFIG = ('<View><Image name="img" value="$photo"/><BrushLabels name="paint" toName="img">'
          + "".join(f'<Label value="{n}"/>' for n in NAMES[1:]) + "</BrushLabels></View>")


def decode(prediction) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle
    first = prediction["result"][0]
    mask = np.zeros((first["original_height"], first["original_width"]), np.uint8)
    for region in prediction["result"]:
        assert region["from_name"] == "paint" and region["to_name"] == "img" and region["type"] == "brushlabels"
        rgba = decode_rle(region["value"]["rle"]).reshape(mask.shape + (4,))
        mask[rgba[..., 3] > 0] = NAMES.index(region["value"]["brushlabels"][0])
    return mask


def local_files_url(path) -> str:
    return "/data/local-files/?d=" + str(path).lstrip("/")


@pytest.fixture
def served(tmp_path):
    """Colour photos, segpipe segment over half of them, and the backend on a free port."""
    from pipelines.labeling import backend
    from segcli.serve import BackendConfig
    (tmp_path / "roads-v1").mkdir()
    model = make_color_model(tmp_path / "roads-v1")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    colors = np.array([[40, 40, 40], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)
    for i in range(4):
        coarse = colors[rng.integers(0, 4, (6, 8))]
        Image.fromarray(coarse.repeat(9, 0).repeat(9, 1)[:50, :70]).save(photos / f"p{i}.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    whole = tmp_path / "segmented_all"  # the reference: segpipe segment over every photo
    batch_segment.run(["--model", str(model), "--input", f"{photos}/p*.png", "--output_dir", str(whole),
                       "--tile_size", "32"])
    half = tmp_path / "segmented_half"  # what the backend answers from: p0 and p1 only
    batch_segment.run(["--model", str(model), "--input", f"{photos}/p[01].png", "--output_dir", str(half),
                       "--tile_size", "32"])
    config = BackendConfig(model=str(model), segmentation=str(half), port=0, tile_size=32,
                           annotations_dir=str(tmp_path / "queue"), max_request_bytes=200_000,
                           max_image_bytes=100_000)
    server = backend.make_server(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield {"url": url, "photos": photos, "whole": whole, "half": half, "model": model,
           "queue": tmp_path / "queue", "server": server}
    server.shutdown()
    server.server_close()


def call(url, path, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json",
                                                                     **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_predictions_decode_to_segpipe_segments_masks_from_the_segmentation_and_from_the_model(served):
    status, health = call(served["url"], "/health")
    assert status == 200 and health["status"] == "UP"
    version = health["model_version"]
    assert version.startswith("roads-v1@") and len(version.rsplit("-", 1)[1]) == 8  # NAME@DATE-HASH
    status, setup = call(served["url"], "/setup", {"project": "1.1", "schema": CONFIG, "hostname": "http://127.0.0.1:1"})
    assert status == 200 and setup == {"model_version": version}

    tasks = [{"id": 10 + i, "data": {"photo": local_files_url(served["photos"] / f"p{i}.png")}} for i in range(4)]
    status, reply = call(served["url"], "/predict", {"tasks": tasks, "label_config": CONFIG, "project": "1.1"})
    assert status == 200 and len(reply["results"]) == 4
    for i, prediction in enumerate(reply["results"]):
        truth = np.asarray(Image.open(served["whole"] / "masks" / f"p{i}.png"))
        assert len(np.unique(truth)) >= 3
        assert prediction["model_version"] == version and 0 < prediction["score"] <= 1
        decoded = decode(prediction)
        # background (index 0) is what no region covers
        assert np.array_equal(decoded, truth), f"p{i}"
    summary = {json.loads(line)["input"].rsplit("/", 1)[1]: json.loads(line)
               for line in (served["whole"] / "summary.jsonl").read_text().splitlines()}
    # p2 and p3 came from the model on the request thread: its mean confidence as segment's
    assert reply["results"][3]["score"] == pytest.approx(summary["p3.png"]["mean_confidence"], abs=1e-5)

    # p0 and p1 come from the segmentation's masks, not the model: a changed mask file is what is served
    changed = np.full((50, 70), NAMES.index("building"), np.uint8)
    changed[:10] = NAMES.index("water")
    Image.fromarray(changed).save(served["half"] / "masks" / "p0.png")
    status, reply = call(served["url"], "/predict", {"tasks": tasks[:1], "label_config": CONFIG})
    assert np.array_equal(decode(reply["results"][0]), changed)


def test_bad_tasks_get_an_error_each_and_the_server_keeps_serving(served):
    url, photos = served["url"], served["photos"]
    tasks = [{"id": 1, "data": {"photo": local_files_url(photos / "missing.png")}},
             {"id": 2, "data": {"photo": local_files_url(photos / "broken.png")}},
             {"id": 3, "data": {"other": "x"}},
             {"id": 4, "data": {"photo": "/data/local-files/?d=../../etc/passwd"}},
             {"id": 5, "data": {"photo": local_files_url(photos / "p2.png")}}]
    status, reply = call(url, "/predict", {"tasks": tasks, "label_config": CONFIG})
    assert status == 200 and [r.get("task") for r in reply["results"][:4]] == [1, 2, 3, 4]
    assert all("result" not in r for r in reply["results"][:4])  # Label Studio stores no prediction for these
    assert "missing.png" in reply["results"][0]["error"]
    assert "broken.png" in reply["results"][1]["error"]
    assert "data.photo" in reply["results"][2]["error"]
    assert ".." in reply["results"][3]["error"]
    assert reply["results"][4]["result"]  # the good task in the same request still predicted

    # an image over the download limit
    big = photos / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(big)
    status, reply = call(url, "/predict", {"tasks": [{"id": 6, "data": {"photo": local_files_url(big)}}],
                                           "label_config": CONFIG})
    assert "max_image_bytes" in reply["results"][0]["error"]

    # a config without BrushLabels, a label the project lacks, a body over the limit, not JSON
    polygons = CONFIG.replace("BrushLabels", "PolygonLabels")
    status, reply = call(url, "/predict", {"tasks": tasks[4:], "label_config": polygons})
    assert status == 400 and "BrushLabels" in reply["error"]
    status, reply = call(url, "/setup", {"schema": polygons})
    assert status == 400 and "BrushLabels" in reply["error"]
    no_water = CONFIG.replace('<Label value="water"/>', "")
    status, reply = call(url, "/predict", {"tasks": tasks[4:], "label_config": no_water})
    assert status == 200 and "water" in reply["results"][0]["error"]
    status, reply = call(url, "/predict", {"tasks": tasks * 10_000, "label_config": CONFIG})
    assert status == 413 and "max_request_bytes" in reply["error"]
    status, reply = call(url, "/predict", b"{not json")
    assert status == 400
    status, reply = call(url, "/nowhere", {})
    assert status == 404

    # still serving
    status, reply = call(url, "/predict", {"tasks": tasks[4:], "label_config": CONFIG})
    assert status == 200 and reply["results"][0]["result"]


def test_basic_auth_when_asked(tmp_path, monkeypatch):
    from pipelines.labeling import backend
    from segcli.serve import BASIC_AUTH_ENV, BackendConfig
    (tmp_path / "m").mkdir()
    model = make_color_model(tmp_path / "m")
    monkeypatch.setenv(BASIC_AUTH_ENV, "labeler:s3cret")
    server = backend.make_server(BackendConfig(model=str(model), port=0, annotations_dir=str(tmp_path / "q")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert call(url, "/health")[0] == 401
        wrong = {"Authorization": "Basic " + base64.b64encode(b"labeler:guess").decode()}
        assert call(url, "/health", headers=wrong)[0] == 401
        right = {"Authorization": "Basic " + base64.b64encode(b"labeler:s3cret").decode()}
        assert call(url, "/health", headers=right)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_annotations_queue_up_as_an_export_that_segpipe_dataset_labelstudio_reads(served, tmp_path):
    """Label Studio's webhook payloads (ANNOTATION_CREATED / UPDATED / ANNOTATIONS_DELETED,
    START_TRAINING) -> ANNOTATIONS_DIR/export.json -> segpipe dataset labelstudio -> masks."""
    from pipelines import labelstudio_to_tfrecord
    url, photos = served["url"], served["photos"]
    seg = tmp_path / "for_review"
    batch_segment.run(["--model", str(served["model"]), "--input", f"{photos}/p*.png", "--output_dir", str(seg),
                       "--tile_size", "32"])
    build_batch(ReviewConfig(segmentation=str(seg), output_dir=str(tmp_path / "batch"), count=3))
    tasks = json.loads((tmp_path / "batch" / "tasks.json").read_text())
    for k, task in enumerate(tasks):  # the person accepts the pre-labels as they are
        payload = {"action": "ANNOTATION_CREATED", "project": {"id": 1},
                   "task": {"id": 100 + k, "data": task["data"], "project": 1},
                   "annotation": {"id": 500 + k, "task": 100 + k, "result": task["predictions"][0]["result"],
                                  "was_cancelled": False, "created_at": "2026-01-01T00:00:00Z"}}
        assert call(url, "/webhook", payload)[0] == 201
    # the person changes their mind on the first: only water, then deletes the second
    water = [r for r in tasks[0]["predictions"][0]["result"] if r["value"]["brushlabels"] == ["water"]]
    assert water
    call(url, "/webhook", {"action": "ANNOTATION_UPDATED", "task": {"id": 100, "data": tasks[0]["data"]},
                           "annotation": {"id": 500, "task": 100, "result": water, "was_cancelled": False}})
    assert call(url, "/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 501}]})[1]["removed"] == 1
    assert call(url, "/webhook", {"action": "START_TRAINING", "project": {"id": 1}})[0] == 201
    assert call(url, "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": 1}})[1]["status"] == "ignored"
    status, reply = call(url, "/webhook", {"action": "ANNOTATION_CREATED"})
    assert status == 400 and "payload" in reply["error"]

    export = served["queue"] / "export.json"
    items = json.loads(export.read_text())
    assert [i["id"] for i in items] == [100, 102]
    assert len((served["queue"] / "training_requests.jsonl").read_text().splitlines()) == 1
    (tmp_path / "classes.json").write_text((served["model"] / "classes.json").read_text())
    labelstudio_to_tfrecord.run(["--export", str(export), "--images", str(photos), "--classes",
                                 str(tmp_path / "classes.json"), "--output_dir", str(tmp_path / "dataset")])
    records = {r["image/filename"].decode(): r for r in read_records(str(tmp_path / "dataset" / "*.tfrecord")).values()}
    names = [task["data"]["image"].rsplit("/", 1)[1] for task in tasks]
    assert sorted(records) == sorted([names[0], names[2]])
    first = np.asarray(Image.open(seg / "masks" / names[0]))
    assert np.array_equal(records[names[0]]["mask"], np.where(first == NAMES.index("water"), first, 0))
    assert np.array_equal(records[names[2]]["mask"], np.asarray(Image.open(seg / "masks" / names[2])))


def test_images_from_label_studio_with_its_token_and_from_elsewhere_without(served):
    """Relative URLs (/data/upload/...) and Label Studio's absolute ones are fetched from the
    host /setup named, with the token /setup sent; any other http URL gets no token."""
    import http.server
    seen = []
    photos = served["photos"]

    class Files(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.server.server_address[1], self.path, self.headers.get("Authorization")))
            if self.server.needs_token and self.headers.get("Authorization") != "Token t0ken":
                self.send_response(401)
                self.end_headers()
                return
            data = (photos / self.path.rsplit("/", 1)[1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    servers = []
    for needs_token in (True, False):
        files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
        files.needs_token = needs_token
        threading.Thread(target=files.serve_forever, daemon=True).start()
        servers.append(files)
    studio, other = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    try:
        status, _ = call(served["url"], "/setup", {"schema": CONFIG, "hostname": studio, "access_token": "t0ken"})
        assert status == 200
        tasks = [{"id": 1, "data": {"photo": "/data/upload/3/p2.png"}},
                 {"id": 2, "data": {"photo": f"{studio}/data/upload/3/p3.png"}},
                 {"id": 3, "data": {"photo": f"{other}/bucket/p2.png"}}]
        status, reply = call(served["url"], "/predict", {"tasks": tasks, "label_config": CONFIG})
        assert status == 200 and all("result" in r for r in reply["results"]), reply
        truth = np.asarray(Image.open(served["whole"] / "masks" / "p2.png"))
        assert np.array_equal(decode(reply["results"][0]), truth)
        ports = [s.server_address[1] for s in servers]
        assert sorted(seen) == sorted([(ports[0], "/data/upload/3/p2.png", "Token t0ken"),
                                       (ports[0], "/data/upload/3/p3.png", "Token t0ken"),
                                       (ports[1], "/bucket/p2.png", None)])
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_a_restarted_server_goes_on_with_the_queue_it_left(tmp_path):
    from pipelines.labeling.backend import AnnotationQueue
    first = AnnotationQueue(str(tmp_path / "q"))
    first.put({"id": 3, "data": {"image": "a.png"}}, {"id": 30, "result": []})
    first.put({"id": 1, "data": {"image": "b.png"}}, {"id": 10, "result": []})
    again = AnnotationQueue(str(tmp_path / "q"))  # a new process over the same folder
    again.put({"id": 2, "data": {"image": "c.png"}}, {"id": 20, "result": []})
    export = json.loads((tmp_path / "q" / "export.json").read_text())
    assert [item["id"] for item in export] == [1, 2, 3]
    assert again.remove({30}) == 1 and not (tmp_path / "q" / "tasks" / "3.json").exists()
    assert [item["id"] for item in json.loads((tmp_path / "q" / "export.json").read_text())] == [1, 2]
