"""``finsae serve``: a read-only HTTP service over an export folder (FastAPI + uvicorn).

* Every endpoint except ``GET /health`` needs the API key in the ``X-API-Key`` header (compared in constant
  time with :func:`hmac.compare_digest`), the OpenAPI document and ``/docs`` too; a missing or wrong key gets
  401 after a delay of :data:`WRONG_KEY_DELAY` seconds (guessing is slow). A key must have at least
  :data:`MIN_KEY_LENGTH` characters, :data:`MIN_DISTINCT` of them different.
* The export is loaded into memory when the app is created; requests never open files, so no request parameter
  can reach the file system. Tickers must match :data:`finsae.export.store.TICKER_PATTERN` (422 otherwise);
  unknown tickers, groupings and groups get 404 with a message naming them.
* ``GET /openapi.json`` is the OpenAPI document (``/docs`` renders it).
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations, which name locals of
# create_app

import asyncio
import hmac
import logging
import os
import socket
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

from finsae.errors import ConfigError
from finsae.export.store import (
    TICKER_PATTERN,
    ExportedRun,
    Group,
    NoVectorError,
    PairExplanation,
    PeerList,
    Similarity,
    UnknownNameError,
    UnknownTickerError,
)

logger = logging.getLogger(__name__)

API_KEY_ENV = "FINSAE_API_KEY"
API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16
MIN_DISTINCT = 8  # "aaaaaaaaaaaaaaaa" or "1234123412341234" is not a key
WRONG_KEY_DELAY = 0.25  # seconds before a 401: slows guessing, not the service (an async sleep)


class RankBy(StrEnum):
    excess = "excess"
    contribution = "contribution"


@dataclass(frozen=True)
class ErrorDetail:
    detail: str


def read_api_key(key_file: str | Path | None = None) -> str:
    """The API key from ``key_file`` (first line) or the ``FINSAE_API_KEY`` environment variable."""
    if key_file is not None:
        path = Path(key_file)
        if not path.is_file():
            raise ConfigError(f"API key file {path} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file {path}: {exc}") from None
        key = lines[0].strip() if lines else ""  # an empty or whitespace-only file has no key
        source = str(path)
    else:
        key = os.environ.get(API_KEY_ENV, "").strip()
        source = f"${API_KEY_ENV}"
    if not key and key_file is not None:
        raise ConfigError(f"the API key file {key_file} is empty: write the key on its first line")
    if not key:
        raise ConfigError(f"no API key: set {API_KEY_ENV} or pass --api-key-file (the service refuses to run "
                          "open)")
    if len(key) < MIN_KEY_LENGTH or len(set(key)) < MIN_DISTINCT:
        raise ConfigError(f"the API key from {source} is shorter than {MIN_KEY_LENGTH} characters or has "
                          f"fewer than {MIN_DISTINCT} different ones; use a random one, "
                          "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key


def create_app(run: ExportedRun | str | Path, api_key: str):
    """The FastAPI application serving ``run`` (an :class:`ExportedRun` or an export folder)."""
    from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
    from fastapi import Path as PathParam
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.security import APIKeyHeader

    import finsae

    if not api_key:
        raise ConfigError("create_app needs a non-empty api_key")
    if not isinstance(run, ExportedRun):
        run = ExportedRun(run)
    expected = api_key.encode("utf-8")
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The service's API key.")

    async def require_key(key: Annotated[str | None, Security(header)]) -> None:
        given = (key or "").encode("utf-8", errors="replace")
        if not hmac.compare_digest(given, expected):
            await asyncio.sleep(WRONG_KEY_DELAY)
            raise HTTPException(
                status_code=401,
                detail=f"missing or invalid API key (send it in the {API_KEY_HEADER} header)",
                headers={"WWW-Authenticate": "ApiKey"},
            )

    Method = Enum("Method", {m: m for m in run.methods}, type=str)  # type: ignore[misc]  # the run's methods
    manifest = run.manifest
    app = FastAPI(title="finsae peers service", version=finsae.__version__, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Peers, similarities and explanations from export schema "
                              f"{manifest['schema_version']} (vintage {manifest['vintage']}, methods "
                              f"{list(run.methods)}). Read-only.")

    @app.exception_handler(UnknownTickerError)
    @app.exception_handler(NoVectorError)
    @app.exception_handler(UnknownNameError)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    Ticker = Annotated[str, PathParam(pattern=TICKER_PATTERN, max_length=16, description="Ticker, e.g. JPM")]
    TickerQ = Annotated[str, Query(pattern=TICKER_PATTERN, max_length=16, description="Ticker, e.g. JPM")]
    default_method = Method(manifest["headline_method"])
    auth = [Depends(require_key)]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorDetail, "description": "Missing or invalid API key"},
        404: {"model": ErrorDetail, "description": "Unknown ticker, grouping or group, or no vector"},
    }

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_key)])
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_key)])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.api_route("/health", methods=["GET", "HEAD"], summary="Liveness and what is loaded (no key needed)")
    def health() -> dict:
        return {"status": "ok", "schema_version": manifest["schema_version"], "vintage": manifest["vintage"],
                "companies": manifest["data"]["n_companies"], "methods": list(run.methods)}

    @app.get(
        "/peers/{ticker}",
        dependencies=auth,
        responses=errors,
        response_model=PeerList,
        summary="Most similar companies",
    )
    def peers(ticker: Ticker, k: Annotated[int, Query(ge=1, le=100)] = 10,
              method: Annotated[Method, Query()] = default_method) -> dict:
        return asdict(run.peers(ticker, k=k, method=method.value))

    @app.get(
        "/similarity",
        dependencies=auth,
        responses=errors,
        response_model=Similarity,
        summary="Cosine similarity of two companies",
    )
    def similarity(a: TickerQ, b: TickerQ, method: Annotated[Method, Query()] = default_method) -> dict:
        return asdict(run.similarity(a, b, method=method.value))

    @app.get("/explain/pair", dependencies=auth, responses=errors, response_model=PairExplanation,
             summary="Shared SAE latents behind a pair's similarity")
    def explain_pair(a: TickerQ, b: TickerQ, top: Annotated[int, Query(ge=1, le=50)] = 8,
                     method: Annotated[Method | None, Query(description="default: the SAE method")] = None,
                     rank_by: Annotated[RankBy, Query(description="excess over a typical pair, or raw term")]
                     = RankBy.excess) -> dict:
        return asdict(
            run.explain_pair(a, b, top=top, method=method.value if method else None, rank_by=rank_by.value)
        )

    @app.get(
        "/groups/{group_id}",
        dependencies=auth,
        responses=errors,
        response_model=Group,
        summary="One peer group and its explanation",
    )
    def group(
        group_id: Annotated[str, PathParam(max_length=100, pattern=r"^[A-Za-z0-9_.:@\- ]+$")],
        grouping: Annotated[
            str | None, Query(max_length=100, description=f"default {run.default_grouping}")
        ] = None,
    ) -> dict:
        return asdict(run.explain_group(group_id, grouping=grouping))

    return app


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`ConfigError` when ``host:port`` cannot be bound (taken by another service, or not
    ours)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on {host}: {exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (another finsae serve? pass --port)"
            ) from None


def serve(export: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          key_file: str | Path | None = None, workers: int = 1, log_level: str = "info") -> None:
    """Load the export and run the service with uvicorn until interrupted."""
    import uvicorn

    key = api_key or read_api_key(key_file)
    check_port_free(host, port)  # before loading the export: a busy port is said at once
    app = create_app(ExportedRun(export), key)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: reachable from other machines; put TLS in front of it", host)
    uvicorn.run(app, host=host, port=port, workers=workers, log_level=log_level)
