"""``eoextract dataset split-epsg|info`` on a real catalogue."""

from __future__ import annotations

import json

import pytest
from tests.dataset.patch_catalogue import make_extraction
from typer.testing import CliRunner

from eoextract.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, app
from eoextract.stac import iter_catalog_items


@pytest.fixture(scope="module")
def extraction(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "out"
    make_extraction(root)
    return root


def test_split_epsg_then_info(extraction, tmp_path):
    runner = CliRunner()
    out = tmp_path / "split"
    result = runner.invoke(app, ["dataset", "split-epsg", str(extraction), str(out)])
    assert result.exit_code == EXIT_OK, result.output
    assert "S2-EXTRACTION-EPSG-32631: 3 item(s)" in result.output
    assert "6 item(s) in 2 collection(s)" in result.output
    assert (out / "S2-EXTRACTION-EPSG-32632.parquet").is_file()

    result = runner.invoke(app, ["dataset", "info", str(out), "--label", "croptype"])
    assert result.exit_code == EXIT_OK, result.output
    assert "items: 6" in result.output
    assert "EPSG 32631: 3" in result.output and "label croptype wheat: 2" in result.output
    assert "2021-03-01" in result.output and "2021-03-11" in result.output

    result = runner.invoke(app, ["dataset", "info", str(out / "S2-EXTRACTION-EPSG-32631.parquet"),
                                 "--json"])
    counts = json.loads(result.output)
    sizes = sum(a.get("file:size", 0) for i in iter_catalog_items(extraction / "stac")
                if i["properties"]["proj:code"] == "EPSG:32631" for a in i["assets"].values())
    assert counts["n_items"] == 3 and counts["per_epsg"] == {"32631": 3}
    assert counts["total_bytes"] == sizes > 0


def test_bad_input(extraction, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["dataset", "info", str(tmp_path / "missing")])
    assert result.exit_code == EXIT_USAGE and "no such file" in result.output
    result = runner.invoke(app, ["dataset", "split-epsg", str(extraction), str(tmp_path / "o"),
                                 "--by", "month"])
    assert result.exit_code == EXIT_USAGE and "--by" in result.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    result = runner.invoke(app, ["dataset", "split-epsg", str(extraction), str(tmp_path / "busy")])
    assert result.exit_code == EXIT_PROBLEMS and "refusing" in result.output


def test_bad_dates_and_files_that_are_no_catalogue_are_one_line_errors(extraction, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["dataset", "info", str(extraction), "--start", "2021-13-01"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "error: start is not a date or time: '2021-13-01'" in result.output
    result = runner.invoke(app, ["dataset", "info", str(extraction), "--start", "2022-01-01",
                                 "--end", "2021-01-01"])
    assert result.exit_code == EXIT_USAGE and "is after end" in result.output
    result = runner.invoke(app, ["dataset", "info", str(extraction), "--label", "no_such_property"])
    assert result.exit_code == EXIT_OK and "(no item has the property 'no_such_property')" in result.output
    script = tmp_path / "notes.py"
    script.write_text("print('not a catalogue')\n")
    result = runner.invoke(app, ["dataset", "info", str(script)])
    assert result.exit_code == EXIT_PROBLEMS
    assert f"error: {script} is not a STAC JSON file" in result.output
    assert "Traceback" not in result.output


def test_outputs_that_cannot_be_written_are_refused_before_any_work(extraction, tmp_path):
    runner = CliRunner()
    # the extraction's own folder: not an earlier split, refused up front (no validation errors)
    result = runner.invoke(app, ["dataset", "split-epsg", str(extraction), str(extraction)])
    assert result.exit_code == EXIT_PROBLEMS and "refusing to replace it" in result.output
    assert not list(extraction.parent.glob(f".{extraction.name}.split-*"))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for args in (["dataset", "patches-to-points", str(extraction), "-o", str(folder)],
                 ["stac", "export-geoparquet", str(extraction), str(folder)]):
        result = runner.invoke(app, args)
        assert result.exit_code == EXIT_USAGE, result.output
        assert f"error: {folder} is a folder; give the path of the" in result.output
    assert list(tmp_path.iterdir()) == [folder] and not list(folder.iterdir())
    # no empty progress line when the output is not a terminal
    result = runner.invoke(app, ["dataset", "split-epsg", str(extraction), str(tmp_path / "split")])
    assert result.exit_code == EXIT_OK and result.output.startswith("S2-EXTRACTION-EPSG-"), result.output
