#!/usr/bin/env python3
"""Set up a virtualenv for eoextract and run the main example or the test suite.

Usage (only ``python3`` is needed; ``.venv`` is created and filled on first use):

    python3 dev.py example [ARGS...]   # the main example, offline, on the embedded backend
                                       # (output in ./s2_croptype_extraction, or --output-dir)
    python3 dev.py test [PYTEST ARGS...]  # the whole test suite
    python3 dev.py bench [SCRIPT]      # benchmarks (see benchmarks/)
    python3 dev.py shell               # print the path of the virtualenv's python

The install is skipped when ``pyproject.toml`` has not changed since the last one.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EOEXTRACT_VENV", ROOT / ".venv"))
PY = VENV / "bin" / "python"
EXTRAS = "backend,artifacts,pg,dask,dataset,test,bench"
STAMP = VENV / ".eoextract-install-stamp"


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], **kw)


def _wanted_stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest} {EXTRAS}"


def ensure_venv() -> None:
    """Create ``.venv`` and install eoextract (editable) with its extras."""
    if not PY.exists():
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _wanted_stamp():
        return
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    # uv resolves and installs the ~150 packages in seconds instead of minutes.
    uv = VENV / "bin" / "uv"
    if not uv.exists():
        _run([PY, "-m", "pip", "install", "-q", "uv>=0.4"], env=env)
    target = f"{ROOT}[{EXTRAS}]"
    if uv.exists():
        rc = _run([uv, "pip", "install", "--python", PY, "-e", target], env=env)
    else:
        rc = 1
    if rc != 0:
        print("uv failed; falling back to pip", flush=True)
        rc = _run([PY, "-m", "pip", "install", "-e", target], env=env)
    if rc != 0:
        sys.exit(f"installing eoextract failed (exit code {rc})")
    STAMP.write_text(_wanted_stamp())


def ensure_test_system_packages() -> None:
    """Install Debian packages some tests need, where apt can (root, CI): chromium for the
    report-rendering test, PostgreSQL with PostGIS for the pgstac publishing tests.

    Where they cannot be installed, those tests skip with a printed reason.
    """
    wanted: list[tuple[list[str], str]] = []
    if not shutil.which("chromium"):
        wanted.append((["chromium"], "the report rendering test"))
    if not glob.glob("/usr/share/postgresql/*/extension/postgis.control"):
        wanted.append((["postgresql", "postgresql-postgis"], "the pgstac publishing tests"))
    if not wanted or os.environ.get("EOEXTRACT_NO_APT"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        for packages, tests in wanted:
            print(f"{' '.join(packages)} not found and apt-get not usable: {tests} will skip", flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    commands = [(["apt-get", "update", "-qq"], " and ".join(tests for _, tests in wanted))]
    commands += [(["apt-get", "install", "-y", "-qq", *packages], tests) for packages, tests in wanted]
    for cmd, tests in commands:
        try:
            rc = subprocess.call(cmd, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            rc = -1
        if rc != 0:
            print(f"{' '.join(cmd)} failed ({rc}): {tests} will skip", flush=True)
            if cmd[1] == "update":
                return


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in {"example", "test", "bench", "shell"}:
        print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    ensure_venv()
    if command == "shell":
        print(PY)
        return 0
    if command == "example":
        # in the caller's folder, so a relative --output-dir means what it says there
        return _run([PY, ROOT / "examples" / "extract_s2_croptype.py", *rest])
    if command == "bench":
        script = rest[0] if rest else "benchmarks/run_all.py"
        return _run([PY, ROOT / script, *rest[1:]], cwd=ROOT)
    ensure_test_system_packages()
    rc = _run([PY, "-m", "pytest", *rest], cwd=ROOT)
    if rc == 5:  # pytest: no tests were collected
        print("pytest collected no tests for this selection", flush=True)
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
