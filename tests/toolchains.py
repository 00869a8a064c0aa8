"""Build the example clients and the contract's checker from the registries, cached under ``.local/``.

npm packages go into ``.local/npm/<name>/node_modules`` (installed again only when the wanted versions
change), Maven artifacts into ``.local/m2``; every step is bounded in time and a failure shows the tool's
own output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

LOCAL = REPO / ".local"
MAVEN_REPO = LOCAL / "m2"


def _run(command: list[str], cwd: Path, timeout_s: float) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise RuntimeError(f"{command[0]} is not installed (needed to build the example clients)")
    done = subprocess.run(
        [tool, *command[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def npm_modules(name: str, dependencies: dict[str, str], *, timeout_s: float = 300) -> Path:
    """``node_modules`` holding exactly ``dependencies`` (name → version), installed once into
    ``.local/npm/<name>``."""
    root = LOCAL / "npm" / name
    manifest = json.dumps(
        {"name": name, "private": True, "dependencies": dependencies}, indent=2, sort_keys=True
    )
    stamp = root / ".installed"
    if stamp.is_file() and stamp.read_text() == manifest and (root / "node_modules").is_dir():
        return root / "node_modules"
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(manifest)
    _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], root, timeout_s)
    stamp.write_text(manifest)
    return root / "node_modules"


def node(
    script: Path, args: list[str], modules: Path, *, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the machine's Node.js, resolving packages from ``modules``."""
    tool = shutil.which("node")
    if tool is None:
        raise RuntimeError("node is not installed")
    return subprocess.run(
        [tool, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "NODE_PATH": str(modules)},
    )


def maven_package(project: Path, *, timeout_s: float = 600) -> str:
    """``mvn -q package`` of ``project`` with the local repository under ``.local/m2``; returns the
    classpath of its classes and runtime jars (``target/lib``)."""
    _run(["mvn", "-B", "-q", f"-Dmaven.repo.local={MAVEN_REPO}", "package"], project, timeout_s)
    return f"{project / 'target' / 'classes'}:{project / 'target' / 'lib' / '*'}"
