"""The read-only HTTP service over an export folder (``finsae serve``)."""

from finsae.serve.app import API_KEY_ENV, API_KEY_HEADER, create_app, read_api_key, serve

__all__ = ["API_KEY_ENV", "API_KEY_HEADER", "create_app", "read_api_key", "serve"]
