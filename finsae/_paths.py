"""Where finsae finds its bundled data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

from finsae.errors import DataError

#: Environment variable that points finsae at another copy of the bundled ``data/`` folder.
DATA_DIR_ENV = "FINSAE_DATA_DIR"
#: Environment variable that moves the on-disk cache (prices, features, pair tests).
CACHE_DIR_ENV = "FINSAE_CACHE_DIR"

_REPO_DATA = Path(__file__).resolve().parent.parent / "data"


def bundled_data_dir() -> Path:
    """The folder holding ``companies.parquet`` and ``prices_daily.parquet``.

    ``$FINSAE_DATA_DIR`` wins; otherwise the ``data/`` folder of the source checkout (finsae is installed
    editable from its repository, which ships the data).
    """
    path = Path(os.environ.get(DATA_DIR_ENV, _REPO_DATA)).expanduser()
    if not (path / "companies.parquet").is_file():
        raise DataError(
            f"bundled data not found in {path} (expected companies.parquet and prices_daily.parquet). "
            f"Install finsae from its repository checkout (pip install -e .) or set ${DATA_DIR_ENV} "
            "to a folder holding the bundled files."
        )
    return path


def cache_dir() -> Path:
    """Root of finsae's on-disk cache: ``$FINSAE_CACHE_DIR`` or ``~/.cache/finsae``. Created on demand."""
    base = (
        os.environ.get(CACHE_DIR_ENV)
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finsae"
    )
    path = Path(base).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
