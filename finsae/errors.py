"""Exceptions raised by finsae. Every error names what is wrong: the file, the column, the ticker, the key."""

from __future__ import annotations


class FinsaeError(Exception):
    """Base class of all finsae errors; the CLI prints these without a traceback."""


class DataError(FinsaeError, ValueError):
    """Input data is missing, malformed or inconsistent (files, columns, tickers, codes, prices)."""


class WindowError(DataError):
    """A return window has no data or loses too many companies."""


class ConfigError(FinsaeError, ValueError):
    """A configuration file is missing, unreadable, or has an unknown key or a bad value."""


class ProviderError(FinsaeError, RuntimeError):
    """An external data provider (Yahoo Finance) cannot be reached or returned nothing usable."""
