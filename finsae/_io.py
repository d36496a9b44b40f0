"""Atomic file writes: a crash never leaves a half-written result or cache file behind."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def process_umask() -> int:
    """The process umask (read from ``/proc/self/status`` where it can be, so no thread sees it changed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_like_new(path: Path, directory: bool = False) -> None:
    """Give a file (or folder) made by ``mkstemp``/``mkdtemp`` (always 0600/0700) the mode a plain ``open`` or
    ``mkdir`` would: 0666 (0777) minus the umask, so a partner on a shared machine can read what we write."""
    os.chmod(path, (0o777 if directory else 0o666) & ~process_umask())


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _chmod_like_new(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fresh_sibling(path: str | Path, tag: str) -> Path:
    """A new empty folder beside ``path`` (hidden, unique name), with the mode ``mkdir`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".{tag}", dir=path.parent))
    _chmod_like_new(tmp, directory=True)
    return tmp


def replace_dir(new: str | Path, out: str | Path, carry: Callable[[Path], bool] | None = None) -> Path:
    """Put the folder ``new`` at ``out`` by renames. A previous ``out`` is renamed aside, then removed; its entries
    for which ``carry(entry)`` is true (and that ``new`` lacks) are moved into the new folder first. The caller
    has checked that ``out`` may be replaced."""
    new, out = Path(new), Path(out)
    if not out.exists():
        os.rename(new, out)
        return out
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    os.rename(new, out)
    for entry in sorted(old.iterdir()):
        if carry is not None and carry(entry) and not (out / entry.name).exists():
            os.rename(entry, out / entry.name)
    shutil.rmtree(old)
    return out


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def run_manifest(config: dict[str, Any], data_files: dict[str, str], seconds: float, **extra: Any) -> dict[str, Any]:
    """What a results folder was made from: package and Python versions, time, config, and each data file's
    path and sha256 (None where the source is not a file)."""
    import finsae

    return {
        "finsae_version": finsae.__version__,
        "python": platform.python_version(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
        "config": config,
        "data": {label: {"path": str(path), "sha256": file_sha256(path) if Path(path).is_file() else None}
                 for label, path in data_files.items()},
        **extra,
    }
