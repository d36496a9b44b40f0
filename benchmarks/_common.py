"""Shared by the benchmark scripts: what machine a figure came from, and printing / saving the figures."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def emit(result: dict, out: Path | None) -> None:
    """Print ``result`` as JSON and, with ``out``, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
