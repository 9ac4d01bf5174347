"""What the dataset jobs write from the shared real data is byte for byte what they wrote before
their code moved (tests/data/golden_datasets.json, tests/golden_datasets.py): shards, classes.json
and stats.json of two COCO conversions, KITTI road pairs and CamVid's val split."""
import json
from pathlib import Path

import pytest

from tests.golden_datasets import make

pytestmark = pytest.mark.slow  # four dataset jobs as processes (about half a minute)


def test_the_dataset_jobs_write_the_same_bytes_as_before(testdata):
    golden = json.loads((Path(__file__).parent / "data" / "golden_datasets.json").read_text())
    assert make(testdata) == golden
