"""segpipe serve labelstudio under a real Label Studio (``make labelstudio`` installs it into
.labelstudio/, its own venv): Label Studio on 127.0.0.1 connects the backend through its API, asks
it for the imported tasks' predictions and stores them; they decode with label-studio-sdk's decoder
to segpipe segment's masks of the same photos. An annotation created through the API reaches the
backend's webhook and its queue, and a task whose image is missing gets no prediction while the
others do. Both servers are stopped by the test.

Skipped when Label Studio is not installed, unless SEGPIPE_REQUIRE_LABEL_STUDIO=1 (.ci/run)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import batch_segment
from tests.helpers import COLOR_NAMES as NAMES, free_ports, make_color_model

ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO = Path(os.environ.get("SEGPIPE_LABEL_STUDIO", ROOT / ".labelstudio" / "bin" / "label-studio"))
EMAIL, PASSWORD = "segpipe@example.com", "segpipe-test-1"
# Label Studio on a closed machine: no version check against PyPI, no analytics or Sentry
# reports, webhooks and ML backends on 127.0.0.1 allowed (its SSRF guard refuses loopback).
OFFLINE = {"LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
           "FRONTEND_SENTRY_DSN": "", "SSRF_PROTECTION_ENABLED": "false",
           "USE_DEFAULT_BANNED_SUBNETS": "false"}


def wait_for(url: str, process, seconds: float, what: str):
    import requests
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} did not answer {url} within {seconds} s")


def stop(process):
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def label_studio(tmp_path):
    if not LABEL_STUDIO.exists():
        if os.environ.get("SEGPIPE_REQUIRE_LABEL_STUDIO") == "1":
            pytest.fail(f"Label Studio not found at {LABEL_STUDIO} (make labelstudio)")
        pytest.skip(f"Label Studio not found at {LABEL_STUDIO} (make labelstudio installs it)")
    import requests
    (port,) = free_ports(1)
    data = tmp_path / "label_studio"
    env = dict(os.environ, **OFFLINE, LABEL_STUDIO_BASE_DATA_DIR=str(data), LOCAL_FILES_SERVING_ENABLED="true",
               LOCAL_FILES_DOCUMENT_ROOT=str(tmp_path))
    env.pop("PYTHONPATH", None)
    log = open(tmp_path / "label_studio.log", "w")
    process = subprocess.Popen([str(LABEL_STUDIO), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
                                "--internal-host", "127.0.0.1", "--data-dir", str(data), "--username", EMAIL,
                                "--password", PASSWORD], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", process, 240, "Label Studio")
        session = requests.Session()
        form = session.get(f"{base}/user/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
        session.post(f"{base}/user/login/", data={"email": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": token},
                     headers={"Referer": f"{base}/user/login/"})
        session.headers.update({"X-CSRFToken": session.cookies["csrftoken"], "Referer": base})
        assert session.get(f"{base}/api/current-user/whoami").json()["email"] == EMAIL
        yield base, session, tmp_path
    finally:
        stop(process)
        log.close()


@pytest.fixture
def backend(tmp_path):
    """segpipe serve labelstudio as a process of its own, on a free port it prints."""
    (tmp_path / "roads-v3").mkdir()
    model = make_color_model(tmp_path / "roads-v3")
    log = open(tmp_path / "backend.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "segcli.main", "serve", "labelstudio", "--model", str(model),
                                "--port", "0", "--tile_size", "32", "--local_files_root", str(tmp_path),
                                "--annotations_dir", str(tmp_path / "queue")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = process.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert found, f"backend said {line!r}; log: {(tmp_path / 'backend.log').read_text()[-2000:]}"
        yield found[1], model, tmp_path
    finally:
        stop(process)
        log.close()


@pytest.mark.slow
def test_label_studio_stores_the_backends_predictions_and_sends_annotations_to_its_webhook(label_studio, backend):
    from label_studio_sdk.converter.brush import decode_rle

    from segformat.label_studio import labeling_config
    base, session, root = label_studio
    backend_url, model, _ = backend
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(8)
    colors = np.array([[40, 40, 40], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)
    for i in range(3):
        Image.fromarray(colors[rng.integers(0, 4, (5, 7))].repeat(10, 0).repeat(10, 1)[:48, :64]).save(
            photos / f"s{i}.png")
    segmented = root / "segmented"  # the reference masks: segpipe segment over the same photos
    batch_segment.run(["--model", str(model), "--input", f"{photos}/*.png", "--output_dir", str(segmented),
                       "--tile_size", "32"])

    config = labeling_config(NAMES, [(0, 0, 0), (255, 0, 255), (0, 200, 0), (0, 0, 255)])
    project = session.post(f"{base}/api/projects", json={"title": "segpipe", "label_config": config}).json()
    pid = project["id"]
    relative = photos.relative_to(root).as_posix()
    tasks = [{"image": f"/data/local-files/?d={relative}/s{i}.png"} for i in range(3)]
    tasks.append({"image": f"/data/local-files/?d={relative}/gone.png"})
    imported = session.post(f"{base}/api/projects/{pid}/import", json=tasks)
    assert imported.status_code == 201, imported.text

    connected = session.post(f"{base}/api/ml", json={"project": pid, "url": backend_url, "title": "segpipe"})
    assert connected.status_code == 201, connected.text
    ml = session.get(f"{base}/api/ml", params={"project": pid}).json()[0]
    assert ml["state"] == "CO", ml  # connected: /health and /setup answered

    done = session.post(f"{base}/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                        json={"selectedItems": {"all": True, "excluded": []}})
    assert done.status_code == 200, done.text

    stored = session.get(f"{base}/api/predictions", params={"project": pid}).json()
    ids = {t["id"]: t["data"]["image"] for t in session.get(f"{base}/api/tasks", params={"project": pid}).json()["tasks"]}
    by_image = {ids[p["task"]].rsplit("/", 1)[1]: p for p in stored}
    assert sorted(by_image) == ["s0.png", "s1.png", "s2.png"]  # gone.png: no prediction, the rest stored
    for name, prediction in by_image.items():
        truth = np.asarray(Image.open(segmented / "masks" / name))
        decoded = np.zeros_like(truth)
        for region in prediction["result"]:
            rgba = decode_rle(region["value"]["rle"]).reshape(region["original_height"], region["original_width"], 4)
            decoded[rgba[..., 3] > 0] = NAMES.index(region["value"]["brushlabels"][0])
        assert len(np.unique(truth)) >= 3 and np.array_equal(decoded, truth), name
        assert prediction["model_version"].startswith("roads-v3@")

    # a person's annotation, created through the API, reaches the backend's webhook queue
    task_id = next(t for t, url in ids.items() if url.endswith("s1.png"))
    result = by_image["s1.png"]["result"][:1]
    created = session.post(f"{base}/api/tasks/{task_id}/annotations", json={"result": result})
    assert created.status_code == 201, created.text
    export = root / "queue" / "export.json"
    deadline = time.time() + 30
    while not export.exists() and time.time() < deadline:
        time.sleep(0.5)
    items = json.loads(export.read_text())
    assert [i["id"] for i in items] == [task_id]
    assert items[0]["annotations"][0]["id"] == created.json()["id"]
    assert items[0]["annotations"][0]["result"][0]["value"]["rle"] == result[0]["value"]["rle"]
