"""Versioned exports of a model run (parquet tables + manifest.json + JSON Schema) and the store that reads them."""

from finsae.export.build import SCHEMA_VERSION, ExportResult, export_run, top_peers
from finsae.export.schema import ExportError, export_schema, validate_export

__all__ = ["SCHEMA_VERSION", "ExportError", "ExportResult", "export_run", "export_schema", "top_peers",
           "validate_export"]
