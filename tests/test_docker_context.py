"""The GPU worker image (docker/Dockerfile.gpu) and the training image (docker/Dockerfile.train)
build from a context holding every package setup.py lists: the files its COPY lines bring are enough to build the same wheel as the repository."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def wheel_packages(source: Path, out: Path) -> set:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    wheel, = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name.rsplit("/", 1)[0] for name in archive.namelist()
                if name.endswith(".py") and ".dist-info" not in name}


@pytest.mark.parametrize("dockerfile", ["Dockerfile.gpu", "Dockerfile.train"])
def test_image_context_builds_every_package(tmp_path, dockerfile):
    context = tmp_path / "image"
    copies = re.findall(r"^COPY\s+(.+)$", (ROOT / "docker" / dockerfile).read_text(), re.MULTILINE)
    assert copies
    for line in copies:
        *sources, destination = line.split()
        target = context / destination.lstrip("/")
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target / Path(source).name)
    installed = context / "opt/segpipe"
    repository = tmp_path / "repo"
    shutil.copytree(ROOT, repository, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info",
                                                                    "build", "bench_output", "demo_output"))
    expected = wheel_packages(repository, tmp_path / "wheel_repo")
    assert {"pipelines", "segmodel", "segformat"} <= expected
    assert wheel_packages(installed, tmp_path / "wheel_image") == expected
