"""What an extraction records about each job (its folder, its items' job key and backend job
id) and ESA WorldCereal's callback forms beside openeo-gfmap's."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pystac
import pytest

from eoextract.errors import ConfigurationError
from eoextract.extract import ExtractionManager, ItemStore
from eoextract.extract._placement import GeneratorStyle, detect_style
from eoextract.jobs.db import get_job_db

sys.path.insert(0, str(Path(__file__).parent))
from instant_jobs import create_instant_job, instant_jobs, instant_manager  # noqa: E402


def worldcereal_path(root_folder: Path, job_index: int, row, asset_id: str, s2_grid: dict) -> Path:
    """As WorldCereal's generators: extra settings bound with functools.partial."""
    return root_folder / s2_grid[row["tile"]] / row["tile"] / f"{row['title']}_{job_index}_{asset_id}"


def worldcereal_action(job_items: list[pystac.Item], row, extract_value: int, seen: list) -> list[pystac.Item]:
    """As WorldCereal's post-job actions: (job_items, row) plus bound keyword settings."""
    seen.append({i.id: dict(i.properties) for i in job_items})
    for item in job_items:
        item.properties["extract_value"] = extract_value
    return job_items


def test_worldcereal_callbacks_and_what_each_job_records(local_backend, tmp_path):
    seen: list = []
    df = instant_jobs(2)
    grid = {t: "32631" for t in df["tile"]}
    manager = instant_manager(
        tmp_path / "out", local_backend, functools.partial(worldcereal_path, s2_grid=grid),
        post_job_action=functools.partial(worldcereal_action, extract_value=1, seen=seen))
    stats = manager.run_jobs(df, create_instant_job, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2}
    db = get_job_db(tmp_path / "jobs.db")
    by_job = {job.job_key: job for job in ItemStore(tmp_path / "out").iter_jobs()}
    for key, row in df.iterrows():
        rec = db.get(str(key))
        # the job's own folder, not the extraction root
        folder = tmp_path / "out" / "32631" / row["tile"]
        assert Path(rec.fields["output_dir"]) == folder.resolve()
        items = by_job[str(key)].items
        assert len(items) == 1
        props = items[0]["properties"]
        assert props["eoextract:job_key"] == str(key)
        assert props["eoextract:job_id"] == rec.backend_job_id and rec.backend_job_id
        assert props["extract_value"] == 1
        assert Path(items[0]["assets"]["data"]["href"]).parent == folder.resolve()
        assert Path(items[0]["assets"]["data"]["href"]).name.startswith(f"{row['title']}_0_")
    # the post-job action saw them too
    assert sorted(p["eoextract:job_key"] for s in seen for p in s.values()) == ["0", "1"]
    collection = manager.create_stac()
    item_files = list((collection.parent).rglob("*.json"))
    assert any(b'"eoextract:job_id"' in p.read_bytes() for p in item_files)


def test_job_properties_survive_a_post_job_action_that_drops_them(local_backend, tmp_path):
    def drop(job_items, row, parameters):
        for item in job_items:
            item.properties.pop("eoextract:job_key")
            item.properties["eoextract:job_id"] = "made up"
        return job_items

    manager = instant_manager(tmp_path / "out", local_backend, post_job_action=drop)
    manager.run_jobs(instant_jobs(1), create_instant_job, tmp_path / "jobs.db")
    (item,) = ItemStore(tmp_path / "out").iter_items()
    assert item["properties"]["eoextract:job_key"] == "0"
    assert item["properties"]["eoextract:job_id"] == get_job_db(tmp_path / "jobs.db").get("0").backend_job_id


@pytest.mark.parametrize("generator, style", [
    (lambda root_dir, idx, row, asset_id: None, GeneratorStyle.GFMAP),
    (lambda root_folder, job_index, row, asset_id, s2_grid=None: None, GeneratorStyle.GFMAP),
    (functools.partial(worldcereal_path, s2_grid={}), GeneratorStyle.GFMAP),
    (lambda base, n, row, name: None, GeneratorStyle.GFMAP),
    (lambda root_folder, tmp_path, geometry_index, row: None, GeneratorStyle.SEED),
    (lambda root, tmp, i, row: None, GeneratorStyle.SEED),
])
def test_generator_styles_from_parameter_names(generator, style):
    assert detect_style(generator) is style


def test_wrong_callback_signatures_are_refused_up_front(tmp_path):
    def make(**kwargs):
        kwargs.setdefault("output_path_generator", lambda root_dir, idx, row, asset_id: root_dir / asset_id)
        return ExtractionManager(tmp_path, collection_id="C", **kwargs)

    with pytest.raises(ConfigurationError, match=r"\(job_items, row, parameters\) or \(job_items, row\)"):
        make(post_job_action=lambda job_items: job_items)
    with pytest.raises(ConfigurationError, match=r"\(job_items, row, parameters\) or \(job_items, row\)"):
        make(post_job_action=lambda job_items, row, parameters, more: job_items)
    with pytest.raises(ConfigurationError, match="post_job_action"):
        make(post_job_action="not callable")
    # WorldCereal's three-parameter generator of another release is not one of the forms
    with pytest.raises(ConfigurationError, match=r"\(root_dir, idx, row, asset_id\)"):
        make(output_path_generator=lambda root_folder, row, asset_id: root_folder)
    # both forms of post_job_action, and one taking both, are accepted
    assert make(post_job_action=lambda job_items, row: job_items)._post_job_arity == 2
    assert make(post_job_action=lambda job_items, row, parameters=None: job_items)._post_job_arity == 3
    assert make(post_job_action=functools.partial(worldcereal_action, extract_value=1, seen=[])
                )._post_job_arity == 2
