"""A model run loaded from an export folder: peers, similarities, pair and group explanations, groupings.

Everything is read into memory once (a few tens of MB for 1,542 companies); queries touch no file. Results are
frozen dataclasses with ``to_dict()`` / ``to_frame()``; the HTTP service returns the same objects as JSON.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae.data.universe import TICKER_PATTERN, normalize_tickers
from finsae.errors import ConfigError, DataError
from finsae.explain.groups import explain_pair
from finsae.export.layout import top_peers
from finsae.export.schema import validate_export

logger = logging.getLogger(__name__)

#: What a ticker may look like: the universe's rule (:data:`finsae.data.universe.TICKER_PATTERN`).
_TICKER_RE = re.compile(TICKER_PATTERN)


class UnknownTickerError(DataError, LookupError):
    """A ticker that is not in the export's universe."""


class NoVectorError(DataError, LookupError):
    """A company of the universe without a vector for the method (no text in the formation vintage)."""


class UnknownNameError(ConfigError, LookupError):
    """An unknown method, grouping or group."""


class _Result:
    """``to_dict()`` for the result dataclasses (what the HTTP service returns as JSON)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _frame(items: tuple, cls: type) -> pd.DataFrame:
    """One row per dataclass in ``items``, the fields of ``cls`` as columns (also when ``items`` is empty)."""
    columns = [f.name for f in dataclasses.fields(cls)]
    return pd.DataFrame([dataclasses.asdict(x) for x in items], columns=columns)


@dataclass(frozen=True)
class Company(_Result):
    ticker: str
    name: str | None
    sic: str | None
    gics: str | None
    gics_sector: str | None
    gics_industry: str | None
    has_text: bool


@dataclass(frozen=True)
class Peer:
    rank: int
    ticker: str
    name: str | None
    similarity: float


@dataclass(frozen=True)
class PeerList(_Result):
    """The ``k`` companies most similar to ``ticker`` under ``method`` (cosine of the method's vectors);
    ``k`` is the number returned: the number asked for, or fewer where the method has fewer other
    companies."""

    ticker: str
    method: str
    k: int
    peers: tuple[Peer, ...]

    def to_frame(self) -> pd.DataFrame:
        return _frame(self.peers, Peer)


@dataclass(frozen=True)
class Similarity(_Result):
    a: str
    b: str
    method: str
    similarity: float


@dataclass(frozen=True)
class SharedLatent:
    """One dimension's term of a pair's cosine similarity (``latent`` = ``j``: an SAE latent or a TF-IDF
    term's column; ``label`` says what it means): ``contribution = z_a[j] * z_b[j]``, its ``share`` of the
    similarity, and ``excess = contribution - mean_j**2`` (``mean_j``: the dimension's mean over all
    companies), how much more it contributes than it does to a typical pair."""

    latent: int
    label: str
    contribution: float
    share: float | None
    excess: float


@dataclass(frozen=True)
class PairExplanation(_Result):
    """Why two companies are similar.

    The cosine similarity is the sum of per-dimension terms ``z_a[j] * z_b[j]``. Latents active for almost
    every company contribute to every pair, so the latents are ranked by ``excess``, the term minus what the
    latent gives a typical pair (``mean_j**2``, ``mean`` = the mean unit-length vector); the excesses of all
    dimensions sum to ``similarity - baseline`` with ``baseline = |mean|**2``, close to the mean similarity of
    two random companies. ``rank_by="contribution"`` ranks by the raw terms, which sum to ``similarity``."""

    a: str
    b: str
    method: str
    similarity: float
    baseline: float
    rank_by: str
    latents: tuple[SharedLatent, ...]

    def to_frame(self) -> pd.DataFrame:
        return _frame(self.latents, SharedLatent)


@dataclass(frozen=True)
class GroupLatent:
    """A latent explaining a group: active in ``p_in`` of its members and ``p_out`` of other companies;
    ``score = p_in * log(lift)`` (a learned similarity's groups: the latent's weighted-contribution excess).
    ``evidence`` (learned similarities, schema 1.3): ``shared`` (the members have more of a latent that raises
    similarity), ``absent`` (less of one that lowers it) or ``none``; None for a plain grouping."""

    rank: int
    latent: int
    label: str
    p_in: float
    p_out: float
    lift: float
    score: float
    evidence: str | None = None


@dataclass(frozen=True)
class Group(_Result):
    """One peer group: members, and (for explained groupings) its latents, rule and faithfulness."""

    grouping: str
    group_id: str
    size: int
    members: tuple[str, ...]
    latents: tuple[GroupLatent, ...]
    rule: str | None
    rule_precision: float | None
    rule_recall: float | None
    faithful: bool | None

    def to_frame(self) -> pd.DataFrame:
        return _frame(self.latents, GroupLatent)


@dataclass(frozen=True)
class Grouping:
    """A whole grouping: each company's group (companies in no group are absent)."""

    name: str
    method: str
    level: str
    match: str
    kind: str
    labels: pd.Series  # ticker -> group id

    @property
    def n_groups(self) -> int:
        return int(self.labels.nunique())

    def sizes(self) -> pd.Series:
        return self.labels.value_counts()

    def to_frame(self) -> pd.DataFrame:
        return self.labels.rename("group").rename_axis("ticker").reset_index()


_T = TypeVar("_T")


def _none(v: _T) -> _T | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v


def _count(value: object, name: str, most: int) -> int:
    """``value`` as a whole number from 1 to ``most``, or a ConfigError naming ``name`` (None, a fraction, a
    boolean or a string is refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= int(value) <= most:
        raise ConfigError(f"{name} must be a whole number from 1 to {most}, got {value!r}")
    return int(value)


def _evidence(v: object) -> str | None:
    """A group latent's ``evidence`` (schema 1.3; None: its grouping has none, or an older export)."""
    v = _none(v)
    return None if v is None else str(v)


class ExportedRun:
    """A model run read from an export folder (see :mod:`finsae.pipeline.export`).

    Parameters:
        path: the export folder; validated against the schema on load.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = validate_export(self.path, sample_rows=50)
        read = lambda name: pd.read_parquet(self.path / self.manifest["tables"][name]["file"])  # noqa: E731
        companies = read("companies")
        self._companies = companies.set_index(
            pd.Index(companies["ticker"].astype(str).to_numpy(), dtype=object)
        )
        self._names = self._companies["name"].astype(object).where(self._companies["name"].notna(), None)
        self.methods: tuple[str, ...] = tuple(self.manifest["methods"])
        self.explain_method: str | None = self.manifest.get("explain_method")
        self.default_grouping: str = self.manifest["default_grouping"]
        vectors = read("vectors")
        self._tickers: dict[str, pd.Index] = {}
        self._z: dict[str, sp.csr_matrix] = {}
        self._row: dict[str, dict[str, int]] = {}
        order = {t: i for i, t in enumerate(self._companies.index)}
        with_text = self._companies.index[self._companies["has_text"].astype(bool).to_numpy()]
        for method in self.methods:
            v = vectors[vectors["method"] == method]
            # every company with text has a vector (an all-zero one has no rows in vectors.parquet)
            tickers = pd.Index(sorted(set(with_text) | set(v["ticker"].astype(str)), key=order.__getitem__),
                               dtype=object)
            rows = tickers.get_indexer(v["ticker"].astype(str).to_numpy())
            if (rows < 0).any():
                raise DataError(f"{self.path}: vectors.parquet names tickers not in companies.parquet")
            dim = int(self.manifest["methods"][method]["dims"])
            self._z[method] = sp.csr_matrix((v["value"].to_numpy(np.float64), (rows, v["dim"].to_numpy())),
                                            shape=(len(tickers), dim))
            self._tickers[method] = tickers
            self._row[method] = {t: i for i, t in enumerate(tickers)}
        groups = read("groups")
        self._groupings: dict[str, Grouping] = {}
        for name, g in groups.groupby("grouping", sort=False):
            first = g.iloc[0]
            labels = pd.Series(
                g["group"].astype(str).to_numpy(),
                index=pd.Index(g["ticker"].astype(str).to_numpy(), dtype=object),
                name=str(name),
            )
            self._groupings[str(name)] = Grouping(str(name), str(first["method"]), str(first["level"]),
                                                  str(first["match"]), str(first["kind"]), labels)
        tables = self.manifest["tables"]
        self._expl = read("group_explanations") if "group_explanations" in tables else None
        self._faith = read("group_faithfulness") if "group_faithfulness" in tables else None
        self._means: dict[str, np.ndarray] = {}
        dims = read("dimensions")
        self._dim_labels: dict[str, np.ndarray] = {}
        for method, d in dims.groupby("method", sort=False):
            labels = np.array([f"dim {j}" for j in range(self._z[str(method)].shape[1])], dtype=object)
            inside = d["dim"].to_numpy() < len(labels)
            labels[d["dim"].to_numpy()[inside]] = d["label"].astype(str).to_numpy()[inside]
            self._dim_labels[str(method)] = labels
        logger.info(
            "export %s loaded: %d companies, methods %s, %d groupings",
            self.path,
            len(self._companies),
            list(self.methods),
            len(self._groupings),
        )

    # --- lookups --------------------------------------------------------------------------------------------
    def _ticker(self, ticker: str) -> str:
        t = str(normalize_tickers([str(ticker)])[0])  # the universe's normalisation
        if not _TICKER_RE.match(t):
            raise UnknownTickerError(f"{str(ticker)[:40]!r} is not a ticker (1-16 ASCII letters, digits, "
                                     "'-', '.', '^', '=')")
        if t not in self._companies.index:
            raise UnknownTickerError(f"unknown ticker {ticker!r}: not among the {len(self._companies)} "
                                     "companies of this export")
        return t

    def _method(self, method: str | None) -> str:
        method = method or self.manifest["headline_method"]
        if method not in self._z:
            raise UnknownNameError(f"unknown method {method!r}; this export has {list(self.methods)}")
        return method

    def _vector_row(self, ticker: str, method: str) -> int:
        t = self._ticker(ticker)
        row = self._row[method].get(t)
        if row is None:
            raise NoVectorError(f"{t} has no {self.manifest['vintage']} description, so method {method!r} "
                                "has no vector for it")
        return row

    def company(self, ticker: str) -> Company:
        """Names and codes of one company."""
        t = self._ticker(ticker)
        r = self._companies.loc[t]
        return Company(
            t,
            _none(r.get("name")),
            _none(r.get("sic")),
            _none(r.get("gics")),
            _none(r.get("gics_sector")),
            _none(r.get("gics_industry")),
            bool(r["has_text"]),
        )

    def companies(self) -> pd.DataFrame:
        return self._companies.reset_index(drop=True).copy()

    @property
    def groupings(self) -> tuple[str, ...]:
        return tuple(self._groupings)

    # --- queries --------------------------------------------------------------------------------------------
    def peers(self, ticker: str, k: int = 10, method: str | None = None) -> PeerList:
        """The ``k`` companies with the highest cosine similarity to ``ticker`` under ``method`` (default: the
        headline method); ties broken by universe order, as in ``peers.parquet``."""
        method = self._method(method)
        k = _count(k, "k", 1000)
        i = self._vector_row(ticker, method)
        z = self._z[method]
        sims = np.asarray(z @ z[i].T.toarray()).ravel()
        order, values = top_peers(sims, i, int(k))
        tickers = self._tickers[method]
        peers = tuple(Peer(r + 1, tickers[j], self._names.get(tickers[j]), float(s))
                      for r, (j, s) in enumerate(zip(order, values, strict=True)))
        return PeerList(tickers[i], method, len(peers), peers)  # k: the peers there are (at most k)

    def similarity(self, a: str, b: str, method: str | None = None) -> Similarity:
        """Cosine similarity of two companies' vectors under ``method``."""
        method = self._method(method)
        i, j = self._vector_row(a, method), self._vector_row(b, method)
        z = self._z[method]
        value = float(z[i].multiply(z[j]).sum())
        return Similarity(self._tickers[method][i], self._tickers[method][j], method, value)

    @property
    def explainable_methods(self) -> tuple[str, ...]:
        """Methods whose dimensions have a meaning (SAE latents, TF-IDF terms)."""
        return tuple(self._dim_labels)

    def explain_pair(self, a: str, b: str, top: int = 8, method: str | None = None,
                     rank_by: str = "excess") -> PairExplanation:
        """The ``top`` shared dimensions (SAE latents by default, or TF-IDF terms) behind the cosine
        similarity of ``a`` and ``b``, ranked by ``excess`` over a typical pair (default) or by
        ``contribution``; see :class:`PairExplanation`."""
        if rank_by not in ("excess", "contribution"):
            raise ConfigError(f"rank_by must be 'excess' or 'contribution', got {rank_by!r}")
        top = _count(top, "top", 10_000)
        method = method or self.explain_method
        if method is None:
            raise UnknownNameError("this export has no interpretable method (SAE or TF-IDF without PCA): "
                                   "nothing to explain a pair with")
        method = self._method(method)
        if method not in self._dim_labels:
            raise UnknownNameError(f"method {method!r} has no interpretable dimensions; explain with one of "
                                   f"{list(self._dim_labels)}")
        i, j = self._vector_row(a, method), self._vector_row(b, method)
        z = self._z[method]
        mean = self._mean(method)
        table = explain_pair(
            z[[i, j]].toarray(),
            0,
            1,
            labels=pd.Series(self._dim_labels[method]),
            top=int(top),
            mean=mean,
            rank_by=rank_by,
        )
        cosine = float(z[i].multiply(z[j]).sum())
        latents = tuple(SharedLatent(int(r.latent), str(r.label), float(r.contribution),
                                     float(r.share) if cosine > 0 else None, float(r.excess))
                        for r in table.itertuples())
        return PairExplanation(self._tickers[method][i], self._tickers[method][j], method, cosine,
                               float(mean @ mean), rank_by, latents)

    def _mean(self, method: str) -> np.ndarray:
        if method not in self._means:
            self._means[method] = np.asarray(self._z[method].mean(axis=0)).ravel()
        return self._means[method]

    def grouping(self, name: str | None = None) -> Grouping:
        """A grouping by its name (e.g. ``sae@gics_industry:density`` or ``gics_industry``)."""
        name = name or self.default_grouping
        if name not in self._groupings:
            raise UnknownNameError(f"unknown grouping {name!r}; e.g. {list(self._groupings)[:6]} "
                                   f"({len(self._groupings)} in all)")
        return self._groupings[name]

    def groups(
        self, method: str | None = None, granularity: str = "gics_industry", match: str = "density"
    ) -> Grouping:
        """The grouping of ``method`` (a text method, ``gics`` or ``sic``) at ``granularity`` (a taxonomy
        level; text groupings have as many groups / the same pair density as that level, per ``match``)."""
        method = method or self.manifest["headline_method"]
        if method in ("gics", "sic"):
            if not granularity.startswith(method):
                raise ConfigError(f"granularity {granularity!r} is not a {method.upper()} level (e.g. "
                                  f"{'gics_industry' if method == 'gics' else 'sic3'})")
            return self.grouping(granularity)
        return self.grouping(f"{method}@{granularity}:{match}")

    def explain_group(self, group_id: str, grouping: str | None = None) -> Group:
        """Members of one group and, when the grouping was explained, its latents, rule and faithfulness."""
        g = self.grouping(grouping)
        members = g.labels.index[g.labels.to_numpy() == str(group_id)]
        if len(members) == 0:
            raise UnknownNameError(f"grouping {g.name!r} has no group {group_id!r} (groups are named like "
                                   f"{g.labels.iloc[0]!r})")
        latents: tuple[GroupLatent, ...] = ()
        rule = precision = recall = faithful = None
        if self._expl is not None:
            rows = self._expl[(self._expl["grouping"] == g.name) & (self._expl["group"] == str(group_id))]
            rows = rows.sort_values("rank")
            latents = tuple(GroupLatent(int(r["rank"]), int(r["latent"]), str(r["label"]), float(r["p_in"]),
                                        float(r["p_out"]), float(r["lift"]), float(r["score"]),
                                        _evidence(r.get("evidence")))
                            for _, r in rows.iterrows())
            if len(rows):
                first = rows.iloc[0]
                rule, precision, recall = (
                    str(first["rule"]),
                    _none(float(first["precision"])),
                    _none(float(first["recall"])),
                )
        if self._faith is not None:
            f = self._faith[(self._faith["grouping"] == g.name) & (self._faith["group"] == str(group_id))]
            if len(f):
                faithful = bool(f["faithful"].iloc[0])
        return Group(
            g.name, str(group_id), len(members), tuple(members), latents, rule, precision, recall, faithful
        )
