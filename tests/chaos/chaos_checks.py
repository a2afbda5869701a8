"""Checks the chaos tests share: the output tree, the backend's jobs, the job history."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import blake3

from eoextract.extract import ItemStore
from eoextract.jobs._download import STATE_DIR, TEMP_PREFIX

#: Name prefixes of the temporary files eoextract writes (downloads, records, item files).
TEMP_PREFIXES = (TEMP_PREFIX, ".tmp-")


def recomputed_checksum(path: Path, checksum: object) -> str | None:
    """The multihash of the file's content, hashed with the function ``checksum`` names
    (SHA-256 or BLAKE3; None for anything else)."""
    factories = {"1220": hashlib.sha256, "1e20": blake3.blake3}
    prefix = checksum[:4] if isinstance(checksum, str) else None
    if prefix not in factories:
        return None
    digest = factories[prefix]()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return prefix + digest.hexdigest()


def output_tree_problems(output_dir: Path, catalogue: str = "stac") -> list[str]:
    """What is wrong with an extraction's output folder, as readable lines (empty: all good).

    * every file outside ``.eoextract/`` and the catalogue folder is an asset of a stored
      item, with the item's ``file:size`` and ``file:checksum``;
    * every asset file of every stored item exists;
    * no temporary file in the data tree or the catalogue; interrupted runs may leave some
      in the ``.eoextract`` state folder (partial downloads, records and item files being
      written), which the next run removes once they are stale.

    Error logs of failed jobs (``job_<id>/job_<id>_errors.json``, openeo's layout) are not
    results and are left out.
    """
    root = output_dir.resolve()
    problems: list[str] = []
    referenced: dict[Path, dict] = {}
    for item in ItemStore(root).iter_items():
        for key, asset in item["assets"].items():
            path = Path(asset["href"]).resolve()
            if path in referenced:
                problems.append(f"{path.relative_to(root)} is referenced twice")
            referenced[path] = asset
            if not path.is_file():
                problems.append(f"item {item['id']} asset {key}: {path} is missing")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] == STATE_DIR:
            continue
        if rel.parts[0] == catalogue:
            if path.name.startswith(TEMP_PREFIXES):
                problems.append(f"temporary file left in the catalogue: {rel}")
            continue
        if len(rel.parts) == 2 and rel.parts[0].startswith("job_") and rel.name == f"{rel.parts[0]}_errors.json":
            continue
        if path.name.startswith(TEMP_PREFIXES):
            problems.append(f"temporary file left in the data tree: {rel}")
            continue
        asset = referenced.get(path.resolve())
        if asset is None:
            problems.append(f"file not described by any item: {rel} ({path.stat().st_size} bytes)")
            continue
        if asset.get("file:size") != path.stat().st_size:
            problems.append(f"{rel}: size {path.stat().st_size}, item says {asset.get('file:size')}")
        if asset.get("file:checksum") != recomputed_checksum(path, asset.get("file:checksum")):
            problems.append(f"{rel}: checksum differs from the item's")
    return problems


def leftover_temp_files(output_dir: Path) -> list[Path]:
    """Temporary files in the ``.eoextract`` state folder (left by interrupted runs)."""
    return sorted(p for p in (output_dir / STATE_DIR).rglob("*")
                  if p.is_file() and p.name.startswith(TEMP_PREFIXES))


def backend_titles(connection, prefix: str) -> collections.Counter:
    """How many backend jobs carry each title starting with ``prefix``."""
    return collections.Counter(
        j["title"] for j in connection.list_jobs(limit=None) if str(j.get("title", "")).startswith(prefix))
