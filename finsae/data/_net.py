"""The reachability check of the data providers (Yahoo Finance, SEC EDGAR)."""

from __future__ import annotations

import socket

from finsae.errors import ProviderError


def check_tcp(host: str, port: int, timeout: float, service: str, hint: str) -> None:
    """Raise :class:`ProviderError` (``"<service> cannot be reached (...). <hint>"``) unless a TCP connection
    to ``host:port`` opens within ``timeout`` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ProviderError(f"{service} cannot be reached ({host}:{port}: {exc}). " + hint) from None
