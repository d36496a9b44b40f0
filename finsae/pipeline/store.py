"""The typed run store of a benchmark: what every later step reads instead of re-deriving it.

``finsae benchmark`` writes, inside its results folder (same run id as the tables), the folder ``store/``:

* ``store/store.json``: the store version (:data:`STORE_VERSION`), the run id, the benchmark's name, headline
  method, levels, data files, designs and text vintages, and per vintage one :class:`MethodSpec` per text
  method (how its features were made: a :class:`FeatureRecord`; its transform, clusterer, components, kind,
  learned base) and one :class:`GroupingSpec` per text grouping (which method's features formed it).
* ``store/<vintage>/<method>.vectors.npz``: the unit-length company vectors the method grouped (rows in the
  order of the vintage's companies with text), with the feature names; methods with the same vectors share the
  file of the first of them; learned and price methods have none (their spec says why and which method's
  vectors they build on).
* ``store/<vintage>/<method>.features.npz``: the raw feature matrix of SAE methods (what explanations count
  activity on; methods of one extraction share one file).

:meth:`BenchmarkRun.load` reads it with the result tables (``comovement.parquet`` ...) and the groups, learned
weights and neighbour tables of the folder. A folder written before the store existed, by another store
version, or whose store and tables come from different runs is refused with a
:class:`~finsae.errors.ConfigError` that names the folder and says to rerun ``finsae benchmark``.

:meth:`BenchmarkRun.text_groups` is the loader a pairs backtest uses for the text groups it trades.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae._io import atomic_write, check_run_tables, file_sha256, write_json, write_parquet
from finsae.errors import ConfigError, DataError
from finsae.evaluate.results import RESULT_FILES, BenchmarkResult, DesignInfo

if TYPE_CHECKING:
    from finsae.config import BenchmarkConfig
    from finsae.data import Universe
    from finsae.pipeline.textgroups import TextMethodResult, VintageGroups

logger = logging.getLogger(__name__)

#: Version of the store layout; a store of another version is refused (rerun ``finsae benchmark``).
STORE_VERSION = 1
#: The store's folder inside a results folder, and its index file.
STORE_DIR = "store"
STORE_FILE = "store.json"
#: Tables beside the result tables, per text vintage: ``<stem>_<vintage>.parquet``.
VINTAGE_TABLES = {"groups": "groups", "learned_weights": "learned_weights", "neighbours": "neighbours"}

_RERUN = "rerun finsae benchmark (--config ...) to write it"
#: A ``text_as_of`` design's snapshot vintage (``asof_<date>``) or a rolling design's
#: (``<name>_asof_<date>``): made again from the universe's texts when the run store is read.
_AS_OF = re.compile(r"(?:(.+)_)?asof_(\d{4}-\d{2}-\d{2})")


def check_same_companies(results: Path, pairs: Path) -> None:
    """A pairs backtest folder shown or exported with a benchmark must have run on the same companies table
    (the sha256 both manifests record), else a DataError names both tables."""
    def companies(folder: Path) -> dict:
        try:
            return json.loads((folder / "manifest.json").read_text()).get("data", {}).get("companies") or {}
        except (OSError, ValueError):
            return {}

    a, b = companies(results), companies(pairs)
    if a.get("sha256") and b.get("sha256") and a["sha256"] != b["sha256"]:
        raise DataError(
            f"the pairs backtest {pairs} ran on companies table {b.get('path')} (sha256 "
            f"{b['sha256'][:12]}...), the benchmark {results} on {a.get('path')} (sha256 "
            f"{a['sha256'][:12]}...): give a backtest of the benchmark's universe"
        )


@dataclass(frozen=True)
class FeatureRecord:
    """How a text method's features were made (the record of a run; the spec that makes them is
    :class:`finsae.extract.ExtractionSpec`).

    Attributes:
        features: ``sae``, ``minilm`` or ``tfidf``.
        model: the language model as configured (SAE methods), ``model_id`` its identity as loaded.
        tl_name: its TransformerLens architecture name (local models).
        hook: the SAE's hook point; ``sae`` the SAE folder, ``sae_digest`` its feature-cache identity,
            ``d_sae`` its number of latents.
        pooling, max_length, overlap, dtype, compile, batch_tokens: the pooling and chunking of the
            extraction, the SAE's dtype, whether the blocks ran through ``torch.compile`` and the tokens per
            batch (SAE methods; what ``document_features`` extracts with).
        cache_key: the feature cache folder's name (it hashes all of the above), when the features are cached.
        source: the features' own source record (strings).
        n_features: the number of feature columns.
    """

    features: str
    model: str | None = None
    model_id: str | None = None
    tl_name: str | None = None
    hook: str | None = None
    sae: str | None = None
    sae_digest: str | None = None
    d_sae: int | None = None
    pooling: str | None = None
    max_length: int | None = None
    overlap: int | None = None
    dtype: str | None = None
    compile: bool | None = None
    batch_tokens: int | None = None
    cache_key: str | None = None
    source: dict[str, str] = field(default_factory=dict)
    n_features: int = 0


@dataclass(frozen=True)
class MethodSpec:
    """One text method of one vintage, as the benchmark ran it.

    Attributes:
        name, vintage: the method and the text vintage.
        kind: ``text``, ``price`` or ``text+price``.
        transform: the transform of its features (a learned method: its base's); ``clusterer`` the clusterer
            (a learned method: ``average`` on its learned distance); ``n_components`` the PCA components
            (None: none).
        extraction: how its features were made (None: price peers, which have no text features).
        learned: the learned kind (``supervised`` / ``price`` / ``text+price``), None for a plain text method;
            ``learned_base`` the method it builds on (as recorded by the learned step); ``variant`` its chosen
            group-similarity candidate.
        feature_method: the plain text method whose features and vectors it uses (itself for a text method,
            None for price peers).
        companies: the companies with text in the vintage.
        vectors: the file (relative to the store folder) of the unit vectors it grouped; None with ``note``
            saying why (learned similarities and price peers have no vectors of their own).
        features_file: the file of its raw feature matrix (SAE methods), else None.
    """

    name: str
    vintage: str
    kind: str
    transform: str
    clusterer: str
    n_components: int | None
    extraction: FeatureRecord | None
    learned: str | None
    learned_base: str | None
    variant: str | None
    feature_method: str | None
    companies: int
    vectors: str | None
    features_file: str | None
    note: str = ""


@dataclass(frozen=True)
class GroupingSpec:
    """One text grouping: which method formed it and with whose features.

    Attributes:
        name: ``<method>@<level>:<match>``; ``method``, ``level``, ``match`` its parts.
        vintage: the text vintage it was formed on.
        kind: ``text``, ``hybrid``, ``random``, ``price`` or ``text+price``.
        feature_method: the method whose spec says how its features were made (a hybrid: the text method it
            sub-divides with; a random grouping: None).
        n_groups, density, matched: its formation granularity and whether it hit the target.
    """

    name: str
    vintage: str
    method: str
    level: str
    match: str
    kind: str
    feature_method: str | None
    n_groups: int
    density: float
    matched: bool


@dataclass(frozen=True)
class MethodVectors:
    """A method's stored matrix: ``matrix`` (dense float64 unit vectors, or the raw sparse features), its
    rows' ``tickers`` and the feature ``names``."""

    tickers: pd.Index
    matrix: np.ndarray | sp.csr_matrix
    names: np.ndarray


@dataclass(frozen=True)
class TextGroups:
    """One grouping's labels for a pairs backtest: ``labels`` (ticker -> group, string dtype), the ``vintage``
    and its publication date, and whether trading it from the backtest start looks ahead."""

    name: str
    vintage: str
    published: pd.Timestamp | None
    labels: pd.Series
    look_ahead: bool


def _store_path(folder: Path) -> Path:
    return folder / STORE_DIR / STORE_FILE


def _vintage_file(stem: str, vintage: str) -> str:
    return f"{stem}_{vintage}.parquet"


@dataclass(frozen=True)
class BenchmarkRun:
    """A benchmark run as stored in its results folder (see the module docstring).

    Attributes:
        folder: the results folder it was loaded from (None when built in memory).
        run_id: the run id of its tables and manifest.
        name, headline_method: the benchmark's name and headline method (None without text methods).
        levels, matches: the granularity levels and matching rules of its text groupings.
        data: the data files it was run on (label -> ``{"path", "sha256"}``).
        vintages: text vintage -> publication date, for every vintage with text groups.
        result: the designs and the result tables.
        methods: every method spec, per vintage in the order they ran.
        groupings: every text grouping spec.
        groups, learned_weights, neighbours: per vintage, the tables ``groups_<vintage>.parquet`` (labels of
            every text grouping), ``learned_weights_<vintage>.parquet`` and ``neighbours_<vintage>.parquet``
            (supervised learned methods; empty frames when none).
    """

    folder: Path | None
    run_id: str | None
    name: str
    headline_method: str | None
    levels: tuple[str, ...]
    matches: tuple[str, ...]
    data: dict[str, Any]
    vintages: dict[str, pd.Timestamp | None]
    result: BenchmarkResult
    methods: tuple[MethodSpec, ...]
    groupings: tuple[GroupingSpec, ...]
    groups: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    learned_weights: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    neighbours: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    arrays: dict[str, MethodVectors] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------------ queries
    @property
    def designs(self) -> tuple[DesignInfo, ...]:
        return self.result.designs

    @property
    def headline_vintage(self) -> str | None:
        """The first design's formation text vintage that has text groups (the headline's), else the first."""
        available = list(self.vintages)
        for d in self.designs:
            if d.text_vintage in available:
                return d.text_vintage
        return available[0] if available else None

    def pick_vintage(self, vintage: str | None = None) -> str:
        """``vintage`` if the run has text groups for it, else the :attr:`headline_vintage`."""
        if not self.vintages:
            raise ConfigError(
                f"the benchmark in {self.folder} has no text methods: no text groups, vectors or "
                "features to read"
            )
        if vintage is None:
            return str(self.headline_vintage)
        if vintage not in self.vintages:
            raise ConfigError(
                f"the benchmark has no text groups for vintage {vintage!r}; available: {list(self.vintages)}"
            )
        return vintage

    def method(self, name: str, vintage: str | None = None) -> MethodSpec:
        vintage = self.pick_vintage(vintage)
        for m in self.methods:
            if m.name == name and m.vintage == vintage:
                return m
        names = [m.name for m in self.methods if m.vintage == vintage]
        raise ConfigError(f"no text method {name!r} in vintage {vintage!r} of {self.folder}; it has {names}")

    def methods_of(self, vintage: str) -> list[MethodSpec]:
        return [m for m in self.methods if m.vintage == vintage]

    def grouping(self, name: str, vintage: str | None = None) -> GroupingSpec:
        """The grouping ``name`` (of ``vintage``; without one, of the only vintage that has it)."""
        hits = [g for g in self.groupings if g.name == name and (vintage is None or g.vintage == vintage)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            hit = next((g for g in hits if g.vintage == self.headline_vintage), None)
            if hit is not None:
                return hit
            raise ConfigError(
                f"grouping {name!r} exists in vintages {[g.vintage for g in hits]} of "
                f"{self.folder}: say which vintage"
            )
        names = sorted({g.name for g in self.groupings})
        where = f" in vintage {vintage!r}" if vintage is not None else ""
        raise ConfigError(f"no grouping {name!r}{where} in {self.folder}; available e.g. {names[:8]}")

    def features_of(self, grouping: GroupingSpec) -> MethodSpec:
        """The spec of the method whose features formed ``grouping`` (a hybrid's text method, a learned
        method's base), or a ConfigError saying why there is none."""
        if grouping.feature_method is None:
            raise ConfigError(
                f"grouping {grouping.name!r} is a {grouping.kind} grouping: it was not formed from "
                "text features"
            )
        return self.method(grouping.feature_method, grouping.vintage)

    def labels(self, grouping: GroupingSpec) -> pd.DataFrame:
        """The rows (``ticker``, ``group``, ...) of ``grouping`` in its vintage's groups table."""
        table = self.groups.get(grouping.vintage)
        if table is None:
            raise ConfigError(f"{self.folder} has no {_vintage_file('groups', grouping.vintage)}: {_RERUN}")
        return table[table["name"] == grouping.name]

    def vectors(self, method: MethodSpec) -> MethodVectors:
        """The unit vectors ``method`` grouped (dense float64, rows in the vintage's company order)."""
        if method.vectors is None:
            raise ConfigError(
                f"text method {method.name!r} ({method.vintage}) has no vectors of its own: {method.note}"
            )
        got = self._array(method.vectors)
        m = got.matrix
        dense = m.toarray() if isinstance(m, sp.spmatrix | sp.sparray) else m
        return MethodVectors(got.tickers, np.asarray(dense, dtype=np.float64), got.names)

    def features(self, method: MethodSpec) -> MethodVectors:
        """The raw feature matrix of an SAE method (sparse, as extracted)."""
        if method.features_file is None:
            raise ConfigError(
                f"text method {method.name!r} ({method.vintage}) has no stored raw features (only "
                "SAE methods keep theirs)"
            )
        return self._array(method.features_file)

    def text_groups(
        self, names: Sequence[str], start: pd.Timestamp | str, *, vintage: str | None = None
    ) -> dict[str, TextGroups]:
        """The labels of each grouping in ``names`` (of ``vintage``; without one, see :meth:`grouping`) and
        whether trading them from ``start`` looks ahead: their text vintage has no publication date or was
        published on or after ``start``. Unknown names are a ConfigError listing what the run has."""
        start = pd.Timestamp(start)
        out = {}
        for name in names:
            g = self.grouping(name, vintage)
            rows = self.labels(g)
            published = self.vintages.get(g.vintage)
            out[name] = TextGroups(
                name,
                g.vintage,
                published,
                pd.Series(
                    rows["group"].to_numpy(),
                    index=pd.Index(rows["ticker"], name="ticker"),
                    name=name,
                    dtype="string",
                ),
                bool(published is None or published >= start),
            )
        return out

    def universe(self, companies: str | Path | None = None) -> Universe:
        """The universe the benchmark ran on (the recorded companies table, or ``companies``), refused when
        the table is missing or differs from the recorded one."""
        from finsae.data import load_universe

        recorded = self.data.get("companies") or {}
        path = companies if companies is not None else recorded.get("path")
        if path is not None and not Path(path).is_file():
            raise DataError(
                f"the benchmark's companies table {path} is missing; pass the table it was run on"
            )
        if path is not None and recorded.get("sha256") and file_sha256(path) != recorded["sha256"]:
            raise DataError(
                f"companies table {path} differs from the one the benchmark was run on "
                f"(sha256 {recorded['sha256'][:12]}...): rerun finsae benchmark on it"
            )
        universe = load_universe(path)
        for d in self.designs:  # snapshots of text_as_of and rolling designs, made again from the same texts
            m = _AS_OF.fullmatch(d.text_vintage)
            if m and d.text_vintage not in universe.vintages:
                universe = universe.snapshot(pd.Timestamp(m.group(2)), self._rolling_vintages(m.group(1)),
                                             name=d.text_vintage)
        return universe

    def _rolling_vintages(self, rolling: str | None) -> list[str] | None:
        """The text vintages rolling design ``rolling`` took its snapshots from (its config's ``vintages``;
        None: every dated vintage, as for a ``text_as_of`` design)."""
        if rolling is None or self.folder is None:
            return None
        try:
            cfg = json.loads((self.folder / "manifest.json").read_text()).get("config") or {}
        except (OSError, ValueError):
            return None
        spec = next((r for r in cfg.get("rolling") or [] if r.get("name") == rolling), None)
        return None if spec is None else spec.get("vintages")

    def _array(self, rel: str) -> MethodVectors:
        if rel in self.arrays:
            return self.arrays[rel]
        if self.folder is None:
            raise ConfigError(f"the run store has no array {rel} in memory and no folder to read it from")
        return _read_array(self.folder / STORE_DIR / rel)

    # -------------------------------------------------------------------------------------------- save / load
    def save(self, folder: str | Path, *, tables: bool = True) -> Path:
        """Write the store (index and arrays) into the results folder ``folder``, and with ``tables`` the
        result and per-vintage tables too (with the run id); returns the index file."""
        folder = Path(folder)
        if tables:
            self._save_tables(folder)
        for key, arr in self.arrays.items():
            _write_array(folder / STORE_DIR / key, arr)
        for (
            m
        ) in self.methods:  # every array the index names must exist (a loaded run: copied from its folder)
            for rel in (m.vectors, m.features_file):
                if rel is not None and rel not in self.arrays and not (folder / STORE_DIR / rel).is_file():
                    if self.folder is None:
                        raise ConfigError(f"run store: method {m.name!r} names {rel}, which is not in memory")
                    _write_array(folder / STORE_DIR / rel, self._array(rel))
        return write_json(self._index(), _store_path(folder))

    def has_table(self, attr: str) -> bool:
        """Whether a benchmark writes the result table ``attr``: the co-movement, strata and dropped tables
        always; ranking, verdict and selection with text methods; cold start and two-way with learned
        methods."""
        if attr in ("table", "strata", "dropped"):
            return True
        if attr in ("ranking", "verdict", "selection"):
            return bool(self.vintages)
        return bool(len(self.result.cold_start))

    def _save_tables(self, folder: Path) -> None:
        for attr, file in RESULT_FILES.items():
            if self.has_table(attr):
                write_parquet(getattr(self.result, attr), folder / file, self.run_id)
        for attr, stem in VINTAGE_TABLES.items():
            for vintage, frame in getattr(self, attr).items():
                if attr == "groups" or len(frame):
                    write_parquet(frame, folder / _vintage_file(stem, vintage), self.run_id)

    def _index(self) -> dict[str, Any]:
        return {
            "store_version": STORE_VERSION,
            "run_id": self.run_id,
            "name": self.name,
            "headline_method": self.headline_method,
            "levels": list(self.levels),
            "matches": list(self.matches),
            "data": self.data,
            "vintages": {v: None if p is None else p.isoformat() for v, p in self.vintages.items()},
            "designs": [_design_dict(d) for d in self.designs],
            "tables": [a for a in RESULT_FILES if self.has_table(a)],
            "methods": [dataclasses.asdict(m) for m in self.methods],
            "groupings": [dataclasses.asdict(g) for g in self.groupings],
        }

    @classmethod
    def load(cls, folder: str | Path) -> BenchmarkRun:
        """The run stored in the results folder ``folder`` (see the module docstring for what is refused)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(
                f"no benchmark results folder {folder}: run finsae benchmark --config ... first"
            )
        path = _store_path(folder)
        if not path.is_file():
            raise ConfigError(
                f"{folder} has no run store ({STORE_DIR}/{STORE_FILE}): it is not a benchmark results "
                f"folder, or was written before the store existed; {_RERUN}"
            )
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a readable run store ({exc}); {_RERUN}") from None
        version = index.get("store_version") if isinstance(index, dict) else None
        if version != STORE_VERSION:
            raise ConfigError(
                f"{path} is run store version {version}, this finsae reads version {STORE_VERSION}: {_RERUN}"
            )
        run_id = index.get("run_id")
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigError(f"{manifest_path} is not valid JSON: {exc}") from None
            if manifest.get("run_id") != run_id:
                raise ConfigError(
                    f"{path} is from run {run_id}, but {manifest_path} from run "
                    f"{manifest.get('run_id')}: the folder is inconsistent; {_RERUN}"
                )
            check_run_tables(folder, manifest)
        try:
            return cls._from_index(folder, index)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is inconsistent ({type(exc).__name__}: {exc}); {_RERUN}") from None

    @classmethod
    def _from_index(cls, folder: Path, index: dict[str, Any]) -> BenchmarkRun:
        designs = tuple(_design_from(d) for d in index["designs"])

        def table(file: str, required: bool) -> pd.DataFrame:
            p = folder / file
            if p.is_file():
                return pd.read_parquet(p)
            if required:
                raise ConfigError(
                    f"{folder} has a run store but no {file}: the folder is inconsistent; {_RERUN}"
                )
            return pd.DataFrame()

        listed = set(index.get("tables", ["table"]))
        frames = {a: table(f, a in listed) for a, f in RESULT_FILES.items()}
        result = BenchmarkResult(
            index["name"],
            frames["table"],
            frames["strata"],
            frames["dropped"],
            designs,
            folder,
            frames["ranking"],
            frames["verdict"],
            frames["selection"],
            frames["cold_start"],
            frames["two_way"],
            frames["ranking_two_way"],
        )
        vintages = {v: None if p is None else pd.Timestamp(p) for v, p in index["vintages"].items()}
        methods = tuple(_method_from(m) for m in index["methods"])
        for m in methods:
            for rel in (m.vectors, m.features_file):
                if rel is not None and not (folder / STORE_DIR / rel).is_file():
                    raise ConfigError(
                        f"{folder / STORE_DIR / rel} is missing (method {m.name!r}, vintage "
                        f"{m.vintage}): the run store is incomplete; {_RERUN}"
                    )
        per_vintage = {
            attr: {v: table(_vintage_file(stem, v), attr == "groups") for v in vintages}
            for attr, stem in VINTAGE_TABLES.items()
        }
        return cls(
            folder,
            index["run_id"],
            index["name"],
            index["headline_method"],
            tuple(index["levels"]),
            tuple(index["matches"]),
            index["data"],
            vintages,
            result,
            methods,
            tuple(GroupingSpec(**g) for g in index["groupings"]),
            **per_vintage,
        )


# -------------------------------------------------------------------------------------------- (de)serialising
def _design_dict(d: DesignInfo) -> dict[str, Any]:
    return {
        "name": d.name,
        "text_vintage": d.text_vintage,
        "text_published": None if d.text_published is None else d.text_published.isoformat(),
        "start": d.start.isoformat(),
        "end": d.end.isoformat(),
        "text_look_ahead": d.text_look_ahead,
        "note": d.note,
    }


def _design_from(d: Mapping[str, Any]) -> DesignInfo:
    published = d["text_published"]
    return DesignInfo(
        d["name"],
        d["text_vintage"],
        None if published is None else pd.Timestamp(published),
        pd.Timestamp(d["start"]),
        pd.Timestamp(d["end"]),
        bool(d["text_look_ahead"]),
        d["note"],
    )


def _method_from(m: Mapping[str, Any]) -> MethodSpec:
    ex = m.get("extraction")
    fields = {**m, "extraction": None if ex is None else FeatureRecord(**ex)}
    return MethodSpec(**fields)


def _write_array(path: Path, arr: MethodVectors) -> None:
    m = arr.matrix if sp.issparse(arr.matrix) else sp.csr_matrix(np.asarray(arr.matrix))
    m = sp.csr_matrix(m)

    def write(p: Path) -> None:  # not compressed: float64 vectors shrink by a third, for many times the time
        with open(p, "wb") as fh:
            np.savez(
                fh,
                data=m.data,
                indices=m.indices,
                indptr=m.indptr,
                shape=np.array(m.shape),
                dense=np.array(not sp.issparse(arr.matrix)),
                tickers=np.asarray([str(t) for t in arr.tickers], dtype=str),
                names=np.asarray([str(n) for n in arr.names], dtype=str),
            )

    atomic_write(path, write)


def _read_array(path: Path) -> MethodVectors:
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the run store is incomplete; {_RERUN}")
    try:
        with np.load(path, allow_pickle=False) as z:
            m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(s) for s in z["shape"]))
            tickers = pd.Index(z["tickers"].astype(object), dtype=object, name="ticker")
            names = z["names"].astype(object)
            dense = bool(z["dense"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is not a readable run-store array ({exc}); {_RERUN}") from None
    return MethodVectors(tickers, m.toarray() if dense else m, names)


# ---------------------------------------------------------------------------------- building from a benchmark
def _extraction(m: TextMethodResult) -> FeatureRecord:
    cfg, feats = m.config, m.features
    source = {k: str(v) for k, v in feats.source.items() if v is not None}
    cache = feats.source.get("cache")
    cache_key = Path(str(cache)).name if cache else None
    n = int(feats.matrix.shape[1])
    if cfg.features != "sae":
        return FeatureRecord(
            cfg.features, model=source.get("model"), cache_key=cache_key, source=source, n_features=n
        )
    from finsae.extract.sae import SAEHandle
    from finsae.extract.spec import ExtractionSpec

    handle = SAEHandle(source["sae"])
    # the spec the features were extracted with (what their cache key hashes), not re-read from files
    spec = feats.spec or ExtractionSpec(model=cfg.model, tl_name=cfg.tl_name, sae=source["sae"],
                                        pooling=cfg.pooling)
    return FeatureRecord(
        "sae",
        model=cfg.model,
        model_id=source.get("model"),
        tl_name=cfg.tl_name,
        hook=source.get("hook") or handle.hook_name,
        sae=source["sae"],
        sae_digest=handle.digest,
        d_sae=int(handle.d_sae),
        pooling=spec.pooling,
        max_length=spec.chunk_length(handle),
        overlap=spec.overlap,
        dtype=spec.dtype,
        compile=spec.compile,
        batch_tokens=spec.batch_tokens,
        cache_key=cache_key,
        source=source,
        n_features=n,
    )


def _plain_base(methods: Mapping[str, TextMethodResult], name: str | None) -> str | None:
    """The plain text method a (possibly learned, possibly blended) method ``name`` builds on."""
    seen: set[str] = set()
    while name is not None and name in methods and name not in seen:
        seen.add(name)
        lm = methods[name].learned
        if lm is None:
            return name
        name = lm.base
    return None


def _vintage_specs(
    cfg: BenchmarkConfig, groups: VintageGroups, arrays: dict[str, MethodVectors]
) -> tuple[list[MethodSpec], list[GroupingSpec]]:
    vintage = groups.vintage
    specs: list[MethodSpec] = []
    # methods that share their features (same extraction) or their vectors (same features and transform) share
    # one file: the benchmark hands them the same array object
    shared: dict[int, str] = {}  # id of an array -> its file

    for name, m in groups.methods.items():
        lm = m.learned
        base = _plain_base(groups.methods, name)
        base_result = groups.methods[base] if base is not None else None
        vectors = features = None
        note = ""
        if lm is None:
            vectors = shared.get(id(m.z))
            if vectors is None:
                vectors = shared[id(m.z)] = f"{vintage}/{name}.vectors.npz"
                arrays[vectors] = MethodVectors(
                    m.tickers, np.asarray(m.z, dtype=np.float64), np.asarray(m.features.names)
                )
            if m.config.features == "sae":
                features = shared.get(id(m.features.matrix))
                if features is None:
                    features = shared[id(m.features.matrix)] = f"{vintage}/{name}.features.npz"
                    arrays[features] = MethodVectors(
                        m.tickers, sp.csr_matrix(m.features.matrix), np.asarray(m.features.names)
                    )
        elif base is not None:
            note = (
                f"a learned similarity ({lm.kind}): no per-company vectors of its own (its weights may be "
                f"negative); it builds on the features and vectors of {base!r}"
            )
        else:
            note = "price peers: a similarity of returns, no text features or vectors"
        specs.append(
            MethodSpec(
                name=name,
                vintage=vintage,
                kind=m.kind,
                transform=m.transform if lm is None or base_result is None else base_result.transform,
                clusterer=m.clusterer,
                n_components=(base_result.config.n_components if base_result is not None else None),
                extraction=_extraction(base_result) if base_result is not None else None,
                learned=None if lm is None else lm.kind,
                learned_base=None if lm is None else lm.base,
                variant=None if lm is None else str(lm.group_params.get("variant")),
                feature_method=base,
                companies=len(m.tickers),
                vectors=vectors,
                features_file=features,
                note=note,
            )
        )
    hybrid = f"{cfg.hybrid.method}_in_{cfg.hybrid.parent}" if cfg.hybrid is not None else None
    gspecs = []
    for g in groups.groupings:
        name = groups.name(g)
        kind = groups.kinds[name]
        if g.method in groups.methods:
            feature_method = _plain_base(groups.methods, g.method)
        elif g.method == hybrid and cfg.hybrid is not None:
            feature_method = cfg.hybrid.method
        else:  # random groups: permuted taxonomy labels
            feature_method = None
        gspecs.append(
            GroupingSpec(
                name,
                vintage,
                g.method,
                g.level,
                g.match,
                kind,
                feature_method,
                int(g.n_groups),
                float(g.density),
                bool(g.matched),
            )
        )
    return specs, gspecs


def build_run(
    cfg: BenchmarkConfig,
    result: BenchmarkResult,
    universe: Universe,
    stage_vintages: Mapping[str, VintageGroups],
    data: dict[str, Any],
    run_id: str | None,
    tables: Mapping[str, Mapping[str, pd.DataFrame]],
) -> BenchmarkRun:
    """The store of a finished benchmark: its config ``cfg``, result tables ``result``, the universe, the text
    groups of every vintage (``TextStage``'s), the data files, the run id and the per-vintage tables
    (attribute of
    :data:`VINTAGE_TABLES` -> vintage -> frame, as written)."""
    arrays: dict[str, MethodVectors] = {}
    methods: list[MethodSpec] = []
    groupings: list[GroupingSpec] = []
    for groups in stage_vintages.values():
        m, g = _vintage_specs(cfg, groups, arrays)
        methods += m
        groupings += g
    headline = cfg.headline_method or (cfg.text_methods[0].name if cfg.text_methods else None)
    vintages = {v: universe.vintage(v).published for v in stage_vintages}
    return BenchmarkRun(
        None,
        run_id,
        cfg.name,
        headline,
        tuple(cfg.granularity.levels),
        tuple(cfg.granularity.match),
        data,
        vintages,
        result,
        tuple(methods),
        tuple(groupings),
        {v: tables.get("groups", {}).get(v, pd.DataFrame()) for v in vintages},
        {v: tables.get("learned_weights", {}).get(v, pd.DataFrame()) for v in vintages},
        {v: tables.get("neighbours", {}).get(v, pd.DataFrame()) for v in vintages},
        arrays,
    )
