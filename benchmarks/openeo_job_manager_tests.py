"""Run openeo's public job-manager tests against the installed openeo and against eoextract.

openeo-python-client keeps tests of its ``MultiBackendJobManager`` and job databases in
``tests/extra/job_management/`` (``test_manager.py``, ``test_job_db.py``). This script takes
them from a git checkout of that repository at a given revision (or clones it, where the
network allows), copies them to a scratch folder, and runs them twice:

* ``openeo``: as they are, with the installed openeo;
* ``eoextract``: with the names the test modules import swapped for eoextract's
  (``MultiBackendJobManager`` → :class:`eoextract.JobManager`; with ``--swap-db`` also
  ``create_job_db``/``get_job_db``), through a ``conftest.py`` that patches the test
  modules' globals. openeo's own job database classes stay openeo's, so the run also
  checks that eoextract's manager keeps its state in them.

Tests of openeo's private internals are deselected (see ``PRIVATE``). The script prints
one line per test whose outcome differs and the pass counts of both runs.

Usage::

    python benchmarks/openeo_job_manager_tests.py --repo /path/to/openeo-python-client \
        [--rev v0.51.0] [--swap-db]

Needs the test dependencies of openeo's suite (``requests-mock``, ``httpretty``,
``dirty-equals``, ``time-machine``); ``--deps DIR`` puts a folder with them first on the
path (httpretty needs ``urllib3<2.3``). Nothing is written inside this project.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_URL = "https://github.com/Open-EO/openeo-python-client"
FILES = ["tests/extra/job_management/test_manager.py", "tests/extra/job_management/test_job_db.py"]
#: Tests of openeo's private internals (its thread pool and column bookkeeping), left out.
PRIVATE = [
    "test_normalize_df",
    "test_process_threadworker_updates",
    "test_no_results_leaves_db_and_stats_untouched",
    "test_logs_on_invalid_update",
]

_CONFTEST = '''
import pytest

SWAP_DB = {swap_db!r}


@pytest.fixture(autouse=True)
def _eoextract_swap(request, monkeypatch):
    import eoextract.jobs
    module = request.module
    if hasattr(module, "MultiBackendJobManager"):
        monkeypatch.setattr(module, "MultiBackendJobManager", eoextract.jobs.MultiBackendJobManager)
    if SWAP_DB:
        for name in ("create_job_db", "get_job_db"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(eoextract.jobs, name))
    yield
'''


def _checkout(repo: Path | None, rev: str, into: Path) -> None:
    if repo is None:
        repo = into / "clone"
        subprocess.run(["git", "clone", "--quiet", "--filter=blob:none", REPO_URL, str(repo)], check=True)
    archive = subprocess.run(["git", "--git-dir", str(_git_dir(repo)), "archive", rev, "tests"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def _git_dir(repo: Path) -> Path:
    return repo / ".git" if (repo / ".git").exists() else repo


def _run(root: Path, env: dict[str, str], label: str) -> dict[str, str]:
    deselect = " or ".join(PRIVATE)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-o", "addopts=",
           "--timeout", "30", "-k", f"not ({deselect})", *FILES]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    outcomes = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(PASSED|FAILED|ERROR) (\S+)", line)
        if m:
            outcomes.setdefault(m.group(2), m.group(1))
    if not outcomes:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
    tail = [ln for ln in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    print(f"{label}: {tail[-1] if tail else '(no summary)'}")
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a clone (or bare mirror) of openeo-python-client")
    parser.add_argument("--rev", default="HEAD", help="revision (tag) of the tests, e.g. v0.51.0")
    parser.add_argument("--deps", type=Path, action="append", default=[],
                        help="folder(s) with the test dependencies, put first on PYTHONPATH")
    parser.add_argument("--swap-db", action="store_true",
                        help="also swap create_job_db/get_job_db for eoextract's")
    args = parser.parse_args()
    src = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory(prefix="openeo-tests-") as tmp:
        root = Path(tmp)
        _checkout(args.repo, args.rev, root)
        base_path = [str(p) for p in args.deps] + [os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in base_path if p))
        theirs = _run(root, env, "installed openeo")
        (root / "tests/extra/job_management/conftest.py").write_text(_CONFTEST.format(swap_db=args.swap_db))
        env_ours = dict(env, PYTHONPATH=os.pathsep.join([str(src), env["PYTHONPATH"]]))
        ours = _run(root, env_ours, "eoextract       ")
    for test in sorted(set(theirs) | set(ours)):
        if theirs.get(test) != ours.get(test):
            print(f"  {theirs.get(test, '-'):7} -> {ours.get(test, '-'):7} {test}")
    both = sum(1 for t, o in theirs.items() if o == "PASSED" and ours.get(t) == "PASSED")
    print(f"passed: installed openeo {sum(o == 'PASSED' for o in theirs.values())}/{len(theirs)}, "
          f"eoextract {sum(o == 'PASSED' for o in ours.values())}/{len(ours)}, both {both}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
