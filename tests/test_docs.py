"""The docs name what is there: every module path and every DoFn/PTransform class that
docs/architecture.md names exists in the code, and every relative link of README.md and docs/
points at a file."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_names_modules_and_classes_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:segformat|segcli|segmodel|pipelines|bench)/[\w/]+\.py)`", text))
    paths |= set(re.findall(r"\(((?:segformat|segcli|segmodel|pipelines|bench)/[\w/]+\.py)\)", text))
    assert paths and all((ROOT / p).is_file() for p in paths), sorted(p for p in paths if not (ROOT / p).is_file())
    source = "\n".join(p.read_text() for folder in ("pipelines", "segmodel", "segformat")
                       for p in (ROOT / folder).rglob("*.py"))
    classes = set(re.findall(r"\b([A-Z][A-Za-z]+(?:Fn|Handler|Segmenter|Dataset|Job|Writer))\b", text))
    assert classes and {c for c in classes if not re.search(rf"\bclass {c}\b", source)} == set()


def test_relative_links_point_at_files():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
