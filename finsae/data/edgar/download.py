"""Download a company's 10-K filings from SEC EDGAR, politely: a declared User-Agent, a rate limit, a disk
cache.

The SEC requires every automated request to declare who makes it (``User-Agent: Company Name
admin@company.com``) and allows at most 10 requests per second; :class:`EdgarClient` refuses to run without a
User-Agent that holds an e-mail address and spaces its requests by :class:`RateLimiter`. Filings are fetched
as full submissions (``<accession>.txt``: SEC header + documents), so the filing date and CIK come from the
SEC header. Every response is cached on disk under ``<cache>/edgar/``: filings forever (they never change),
the company index and ticker list for ``index_ttl`` seconds. Before its first network request the client
checks within ``timeout`` seconds that EDGAR can be reached; where it cannot, it raises :class:`ProviderError`
saying so and how to pass local filings instead.

The HTTP layer is a ``transport(url, headers, timeout) -> bytes`` callable (default: :mod:`urllib`), so tests
run the rate limit and the cache against a fake one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finsae._io import atomic_write
from finsae._paths import cache_dir
from finsae.data._net import check_tcp
from finsae.errors import ProviderError

logger = logging.getLogger(__name__)

Transport = Callable[[str, dict[str, str], float], bytes]

EDGAR_HOST = ("www.sec.gov", 443)
MAX_REQUESTS_PER_SECOND = 10.0
_ARCHIVES = "https://www.sec.gov/Archives/edgar/data"
_SUBMISSIONS = "https://data.sec.gov/submissions"
_TICKERS = "https://www.sec.gov/files/company_tickers.json"
NO_EDGAR_HINT = (
    "Pass local filings instead: finsae data edgar FILE_OR_FOLDER ... --out universe.parquet "
    "(full-submission .txt files, HTML or inline XBRL 10-K documents; read_filings() in Python)."
)
ANNUAL_FORMS = ("10-K", "10-K405", "10-KT", "10-KSB", "10-KSB40")


class NotFound(ProviderError):
    """EDGAR answered 404 for a URL."""


class RateLimiter:
    """At most ``rate`` calls of :meth:`wait` per second: each returns no sooner than ``1 / rate`` seconds
    after the previous one returned (thread-safe). ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(self, rate: float = MAX_REQUESTS_PER_SECOND, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = -float("inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def urllib_transport(url: str, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                import gzip

                data = gzip.decompress(data)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFound(f"EDGAR has no {url} (HTTP 404)") from None
        raise ProviderError(f"EDGAR request {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ProviderError(f"EDGAR request {url} failed: {exc}. " + NO_EDGAR_HINT) from None


@dataclass(frozen=True)
class FilingRef:
    """One filing in a company's EDGAR index."""

    cik: int
    accession: str
    form: str
    filed: str
    period: str

    @property
    def url(self) -> str:
        return f"{_ARCHIVES}/{self.cik}/{self.accession.replace('-', '')}/{self.accession}.txt"


def check_user_agent(user_agent: str | None) -> str:
    ua = (user_agent or "").strip()
    if not re.search(r"\S+@\S+\.\w+", ua):
        raise ProviderError(
            "EDGAR requires a declared User-Agent with a name and an e-mail address, e.g. "
            "--user-agent 'Jane Doe Research jane@example.com' (or FINSAE_EDGAR_USER_AGENT); got "
            f"{user_agent!r}. " + NO_EDGAR_HINT)
    return ua


class EdgarClient:
    """Rate-limited, cached EDGAR downloads (see module docs).

    Args:
        user_agent: ``"Name e-mail"``, required by the SEC.
        cache: cache folder (default ``<finsae cache>/edgar``).
        timeout: seconds for the reachability check and for each request.
        rate: requests per second, at most :data:`MAX_REQUESTS_PER_SECOND`.
        transport: the HTTP function (default :func:`urllib_transport`).
        host: ``(host, port)`` probed before the first request (default :data:`EDGAR_HOST`); ``None`` with a
            custom transport skips the probe.
        index_ttl: seconds a cached company index or ticker list stays fresh.
    """

    def __init__(self, user_agent: str | None, *, cache: str | Path | None = None, timeout: float = 5.0,
                 rate: float = MAX_REQUESTS_PER_SECOND, transport: Transport | None = None,
                 host: tuple[str, int] | None = EDGAR_HOST, index_ttl: float = 86400.0,
                 limiter: RateLimiter | None = None) -> None:
        self.user_agent = check_user_agent(user_agent)
        if rate > MAX_REQUESTS_PER_SECOND:
            raise ProviderError(f"EDGAR allows at most {MAX_REQUESTS_PER_SECOND:g} requests per second; got "
                                f"{rate}")
        self.cache = Path(cache) if cache is not None else cache_dir() / "edgar"
        self.timeout = timeout
        self.transport = transport or urllib_transport
        self.host = host
        self.index_ttl = index_ttl
        self.limiter = limiter or RateLimiter(rate)
        self.requests = 0
        self._checked = False

    def check_reachable(self) -> None:
        """Raise :class:`ProviderError` unless a TCP connection to EDGAR opens within ``timeout`` seconds."""
        if self._checked or self.host is None:
            return
        host, port = self.host
        check_tcp(host, port, self.timeout, "SEC EDGAR", NO_EDGAR_HINT)
        self._checked = True

    def _cache_path(self, url: str) -> Path:
        name = re.sub(r"^https?://", "", url)
        if "/Archives/edgar/data/" in url:
            parts = url.split("/Archives/edgar/data/")[1].split("/")
            return self.cache / "filings" / parts[0] / parts[-1]
        digest = hashlib.sha1(url.encode()).hexdigest()[:12]
        return self.cache / "index" / f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)[-80:]}.{digest}"

    def get(self, url: str, *, ttl: float | None = None) -> bytes:
        """The body of ``url``: from the cache when present (and younger than ``ttl`` seconds, if given), else
        downloaded (rate-limited, with the User-Agent) and cached."""
        path = self._cache_path(url)
        if path.is_file() and (ttl is None or time.time() - path.stat().st_mtime < ttl):
            logger.debug("EDGAR cache hit %s", url)
            return path.read_bytes()
        self.check_reachable()
        self.limiter.wait()
        self.requests += 1
        logger.info("EDGAR GET %s", url)
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip", "Host": url.split("/")[2]}
        data = self.transport(url, headers, self.timeout)
        atomic_write(path, lambda p: p.write_bytes(data))
        return data

    def _json(self, url: str) -> dict:
        try:
            return json.loads(self.get(url, ttl=self.index_ttl))
        except json.JSONDecodeError as exc:
            raise ProviderError(f"EDGAR returned malformed JSON for {url}: {exc}") from None

    def cik_for(self, company: str) -> int:
        """The CIK of ``company``: a number is taken as the CIK, anything else is looked up as a ticker."""
        company = company.strip()
        if company.isdigit():
            return int(company)
        wanted = company.upper().replace(".", "-")
        for row in self._json(_TICKERS).values():
            if str(row.get("ticker", "")).upper().replace(".", "-") == wanted:
                return int(row["cik_str"])
        raise ProviderError(f"EDGAR's ticker list has no ticker {company!r}; pass the CIK instead")

    def filings(self, cik: int, years: tuple[int, int] | None = None,
                forms: tuple[str, ...] = ANNUAL_FORMS, amendments: bool = False) -> list[FilingRef]:
        """The company's filings of ``forms`` (and their ``/A`` amendments with ``amendments``) whose period
        of report (else filing date) falls in the inclusive year range ``years``."""
        index = self._json(f"{_SUBMISSIONS}/CIK{cik:010d}.json")
        tables = [index.get("filings", {}).get("recent", {})]
        for extra in index.get("filings", {}).get("files", []):
            tables.append(self._json(f"{_SUBMISSIONS}/{extra['name']}"))
        wanted = set(forms) | ({f + "/A" for f in forms} if amendments else set())
        out = []
        for t in tables:
            for acc, form, filed, period in zip(
                t.get("accessionNumber", []),
                t.get("form", []),
                t.get("filingDate", []),
                t.get("reportDate", []),
                strict=False,
            ):
                if form not in wanted:
                    continue
                year = int((period or filed)[:4])
                if years is not None and not years[0] <= year <= years[1]:
                    continue
                out.append(FilingRef(cik, acc, form, filed, period or ""))
        return sorted(out, key=lambda f: f.filed)

    def download(
        self, company: str, years: tuple[int, int] | None = None, *, amendments: bool = False
    ) -> list[Path]:
        """Download (or take from the cache) the full submissions of a company's 10-Ks; their paths."""
        cik = self.cik_for(company)
        refs = self.filings(cik, years, amendments=amendments)
        if not refs:
            logger.warning("EDGAR lists no 10-K of CIK %d in years %s", cik, years)
        paths = []
        for ref in refs:
            self.get(ref.url)
            paths.append(self._cache_path(ref.url))
        return paths
