"""The import contract of issue #14: stage packages import only lower stages, never the config, the pipeline
or the entry points (``[tool.importlinter]`` in pyproject.toml, checked by ``make lint``). The contract holds
for the tree, and it fails, naming the import, when a stage imports upward."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT.is_file(), reason="import-linter not installed (pip install -e .[dev])"
)


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_the_layers() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "1 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(("module", "forbidden"), [
    ("finsae/group/taxonomy.py", "finsae.config"),        # a stage reading the config
    ("finsae/evaluate/ranking.py", "finsae.pipeline.benchmark"),  # a stage importing an orchestrator
    ("finsae/data/codes.py", "finsae.group.cluster"),     # a lower stage importing a higher one
])
def test_a_forbidden_import_breaks_the_contract(tmp_path: Path, module: str, forbidden: str) -> None:
    shutil.copytree(ROOT / "finsae", tmp_path / "finsae", ignore=shutil.ignore_patterns("__pycache__", "sae"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\nimport {forbidden}  # noqa: E402\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and forbidden in res.stdout, res.stdout[-3000:]
