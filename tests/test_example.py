"""The main example (seed 004's pipeline, offline) runs end to end at a small size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eoextract.stac import validate_catalog

EXAMPLE = Path(__file__).parents[1] / "examples" / "extract_s2_croptype.py"


@pytest.mark.slow
def test_extract_s2_croptype_example(tmp_path):
    out = tmp_path / "extraction"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--samples", "6", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("6 samples, 5 to extract")
    summary = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:] if ":" in line}
    assert set(summary) >= {"jobs", "items", "files", "catalogue", "elapsed"}
    assert summary["jobs"].startswith("finished") and summary["items"] == "5"
    assert summary["catalogue"].endswith("(valid)")
    report = validate_catalog(out / "stac" / "collection.json", check_assets=True)
    assert report.ok and report.n_items == 5
    assert (out / "job_tracker.csv").is_file()
