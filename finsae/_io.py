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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatch
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


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        from finsae.errors import DataError

        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        _chmod_like_new(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota, a read-only folder: one line naming the file, no traceback
        Path(tmp).unlink(missing_ok=True)
        from finsae.errors import DataError

        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc
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
    """Put the folder ``new`` at ``out`` by renames. A previous ``out`` is renamed aside, then removed; its
    entries for which ``carry(entry)`` is true (and that ``new`` lacks) are moved into the new folder first.
    The caller has checked that ``out`` may be replaced."""
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


#: Parquet schema metadata key holding the run id of the results folder a table belongs to.
RUN_ID_KEY = b"finsae_run_id"
#: What a results folder's run writes (and replaces): its tables, the markdown table and the manifest.
RESULTS_FILES: tuple[str, ...] = ("*.parquet", "table.md", "manifest.json")


def new_run_id() -> str:
    """A unique id for one run: UTC time plus random hex (``20240101T120000-1a2b3c4d``)."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def write_parquet(frame: pd.DataFrame, path: str | Path, run_id: str | None = None) -> Path:
    """Write ``frame`` (no index) atomically; ``run_id`` is stored in the file's schema metadata
    (:data:`RUN_ID_KEY`), where :func:`parquet_run_id` reads it back."""
    if run_id is None:
        return atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(p: Path) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), RUN_ID_KEY: run_id.encode()})
        pq.write_table(table, p)

    return atomic_write(path, write)


def parquet_run_id(path: str | Path) -> str | None:
    """The run id stored in a parquet file by :func:`write_parquet`, or None."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    value = meta.get(RUN_ID_KEY)
    return value.decode() if value is not None else None


def _owned(name: str, owned: Sequence[str]) -> bool:
    return any(fnmatch(name, pattern) for pattern in owned)


def check_results_target(out: str | Path, owned: Sequence[str] = RESULTS_FILES) -> None:
    """Refuse to write a run into ``out`` when that could destroy something that is not a finsae run: an
    existing ``out`` must be a folder that is empty, a results folder (``manifest.json`` written by finsae),
    or hold no file a run would replace (``owned`` patterns)."""
    from finsae.errors import ConfigError

    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ConfigError(f"results folder {out} exists and is not a folder: choose another output folder")
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and "finsae_version" in manifest and "config" in manifest:
        return
    clash = sorted(e.name for e in out.iterdir() if _owned(e.name, owned))
    if clash:
        raise ConfigError(f"{out} is not a finsae results folder (no finsae manifest.json) but holds "
                          f"{clash[:5]}, which a run would replace: choose another output folder or move "
                          "them")


@contextmanager
def staged_results(out: str | Path, owned: Sequence[str] = RESULTS_FILES) -> Iterator[tuple[Path, str]]:
    """Write a results folder whole or not at all: yields ``(folder, run_id)``, a fresh hidden sibling of
    ``out`` and a new run id; write every table there (``write_parquet(..., run_id=run_id)``, ``"run_id"`` in
    the manifest). When the block ends normally the folder replaces ``out`` in one swap: ``out`` is the
    previous run or the new one, never a mix. Entries of the previous ``out`` that are not the run's own files
    (``owned`` patterns: e.g. ``explanations/``, a user's notes) are moved into the new folder, never deleted.

    When the block raises, ``out`` is untouched; what the run had written is kept, for inspection, in
    ``<out>.failed-<run_id>`` (logged); a killed process leaves the hidden ``.<out>.*.partial`` folder
    instead."""
    out = Path(out)
    check_results_target(out, owned)
    run_id = new_run_id()
    tmp = fresh_sibling(out, "partial")
    try:
        yield tmp, run_id
    except BaseException:
        if any(tmp.iterdir()):
            failed = out.parent / f"{out.name}.failed-{run_id}"
            os.rename(tmp, failed)
            logger.warning("run failed: %s is unchanged; the tables written so far are in %s", out, failed)
        else:
            tmp.rmdir()
        raise
    check_results_target(out, owned)
    replace_dir(tmp, out, carry=lambda entry: not _owned(entry.name, owned))


def check_run_tables(folder: str | Path, manifest: dict, owned: Sequence[str] = ("*.parquet",)) -> None:
    """Raise :class:`~finsae.errors.DataError` unless every table of the results ``folder`` carries the run id
    of its ``manifest`` (tables of another run beside this manifest: a mixed folder). A manifest without a run
    id (written before run ids) is not checked."""
    from finsae.errors import DataError

    run_id = manifest.get("run_id")
    if not run_id:
        logger.warning("%s has no run id (written by an older finsae): its tables cannot be checked to come "
                       "from one run", folder)
        return
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or not _owned(path.name, owned):
            continue
        try:
            got = parquet_run_id(path)
        except Exception as exc:  # unreadable table: name it
            raise DataError(f"{path} is not a readable parquet table: {exc}") from None
        if got != run_id:
            raise DataError(f"{path} comes from another run ({got or 'no run id'}) than "
                            f"{Path(folder) / 'manifest.json'} ({run_id}): the folder mixes runs; rerun into "
                            "a fresh folder")


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


def run_manifest(
    config: dict[str, Any], data_files: dict[str, str], seconds: float, **extra: Any
) -> dict[str, Any]:
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
