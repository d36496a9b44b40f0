"""Versioned exports of a model run (parquet tables + manifest.json + JSON Schema) and the store that reads
them."""

from finsae.export.layout import EXPORT_MARKER, SCHEMA_VERSION, ExportResult, top_peers
from finsae.export.schema import ExportError, export_schema, validate_export

__all__ = ["EXPORT_MARKER", "SCHEMA_VERSION", "ExportError", "ExportResult", "export_schema", "top_peers",
           "validate_export"]
