"""segpipe vertex-train --dry_run: the Vertex AI CustomJob request, checked field by field against
a literal and read back by Google's own client library (offline: nothing is called)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import vertex_train

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--train_data", "gs://b/data/camvid/train", "--val_data", "gs://b/data/camvid/val",
         "--model_dir", "gs://b/models/camvid", "--config", "camvid"]


def test_the_dry_run_prints_the_request_field_by_field():
    done = subprocess.run([sys.executable, "-m", "segcli.main", "vertex-train", "--project", "my-project", "--region",
                           "europe-west4", "--image", "europe-west4-docker.pkg.dev/my-project/seg/train:0.1.0",
                           "--replicas", "3", "--accelerator_type", "NVIDIA_TESLA_T4", "--accelerator_count", "2",
                           "--machine_type", "n1-standard-16", "--service_account", "trainer@my-project.iam.gserviceaccount.com",
                           "--timeout_hours", "6", "--dry_run", "--", *TRAIN],
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    request = json.loads(done.stdout)
    machine = {"machineType": "n1-standard-16", "acceleratorType": "NVIDIA_TESLA_T4", "acceleratorCount": 2}
    container = {"imageUri": "europe-west4-docker.pkg.dev/my-project/seg/train:0.1.0", "args": TRAIN}
    assert request == {
        "parent": "projects/my-project/locations/europe-west4",
        "custom_job": {"displayName": "segpipe-train", "jobSpec": {
            "workerPoolSpecs": [  # the chief, then the other two machines
                {"machineSpec": machine, "replicaCount": "1", "containerSpec": container},
                {"machineSpec": machine, "replicaCount": "2", "containerSpec": container}],
            "scheduling": {"timeout": "21600s"},
            "serviceAccount": "trainer@my-project.iam.gserviceaccount.com"}}}
    # Google's client library reads it back as the CustomJob it would send
    from google.cloud import aiplatform_v1 as vertex
    job = vertex.CustomJob.from_json(json.dumps(request["custom_job"]))
    assert job.job_spec.worker_pool_specs[1].replica_count == 2
    assert job.job_spec.worker_pool_specs[0].machine_spec.accelerator_type == vertex.AcceleratorType.NVIDIA_TESLA_T4


def test_one_machine_without_accelerators_has_one_pool_and_no_accelerator():
    request = vertex_train.main(["--project", "p", "--region", "us-central1", "--image", "img:1",
                                 "--accelerator_count", "0", "--dry_run", "--", *TRAIN])
    (pool,) = request["custom_job"]["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "g2-standard-8"} and pool["replicaCount"] == "1"


@pytest.mark.parametrize("extra, message", [
    (["--", "--train_data", "data/train", "--model_dir", "gs://b/m"], "must be a gs:// path"),
    (["--", "--train_data", "gs://b/d"], "--model_dir is missing"),
    (["--accelerator_type", "NVIDIA_GTX_9000", "--", *TRAIN], "is not one of Vertex AI's"),
    (["--replicas", "0", "--", *TRAIN], "replicas must be at least 1"),
])
def test_settings_vertex_would_refuse_are_refused_here(extra, message):
    with pytest.raises(SystemExit, match=message):
        vertex_train.main(["--project", "p", "--region", "r", "--image", "i", "--dry_run", *extra])
