"""Words for SAE latents: the tokens and snippets where each latent fires, and a label an analyst can read.

The token statistics of :mod:`finsae.extract.tokenstats` (gathered by the feature extraction's own pass,
shard by shard, or from stored token activations via :class:`StatsAccumulator`) give, per latent ``j``:
``mass[j, t]``, its summed activation on token ``t``; the documents each token occurs in; and its
``n_examples`` strongest activations, with a snippet around each.

A **content word** is a whole word of the corpus, three letters or more, that is not a stopword, corporate
boilerplate ("company", "headquartered", "provides", ...), a number word or a place (US states and large
cities, countries, regions): :data:`NON_CONTENT`. The label rule, fixed before any sweep SAE was labelled:

* ``kind = "token"``: where content-word tokens carry at least ``TOKEN_SHARE`` (25%) of the latent's
  activation mass, the ``n_label_tokens`` content words with the highest ``mass[j, t] * idf(t)``
  (``idf = 1 + log((D + 1) / (df + 1))`` over the ``D`` documents): ``loans / banking / deposits``;
* ``kind = "context"``: else, where a content word occurs around at least ``CONTEXT_SHARE`` (40%) of its
  strongest examples and at least ``CONTEXT_LIFT`` (2) times as often as in a random document, the (at most
  two) such words by count x IDF: ``near: drilling, wells`` (a latent that fires on "of" in "exploration of
  oil" reads its context; a word common everywhere is no context);
* ``kind = "documents"`` (added 2026-12-01, before any label of it was read; rule version v5): else, where
  the document activations are given (``doc_mass``: the pooled features, documents x latents; the product
  passes them), the content words of the *documents* the latent fires in. With ``p_d = a_dj / sum_d a_dj``
  the share of latent ``j``'s activation in document ``d`` and ``B_dw = 1`` where word ``w`` occurs in ``d``,
  the word's share is ``r_w = sum_d p_d B_dw`` and its null rate ``b_w = max(df_w / D, sum_d n_d B_dw /
  sum_d n_d)`` (``n_d`` tokens of ``d``): the larger of the rate among documents and among tokens, so that
  neither a latent firing once per document nor one firing on every token gets a lift from document length.
  Words with ``r_w >= DOC_SHARE`` (50%) and ``r_w >= DOC_LIFT (2) x b_w`` qualify, ranked by ``r_w
  log(r_w / b_w)`` (the word's term of the KL divergence of the two rates), at most two; only for latents
  whose activation is spread over an effective number of documents ``(sum a)^2 / sum a^2`` of at least
  ``DOC_MIN_EFFECTIVE`` (5), so that no single company's words label a latent. The label keeps the tokens
  it fires on: ``1 / 2 in: phase, clinical`` (it fires on the digits of drug codes and trial phases in
  descriptions of drug developers). A latent firing on everything shares its documents' words with every
  document: no lift, no label;
* ``kind = "function"``: else the raw top tokens, marked ``(no business word)``; ``"dead"``: never active.

**Phrases** (rule v6, written 2026-12-03 after the REIT spot check's gap was read, "a[[ real]] estate
investment trust", and before any v6 label was computed): a ``token`` latent whose strongest examples (at
least ``PHRASE_MIN_EXAMPLES``, 5) mostly sit in one phrase shows that phrase in its label. An example's
phrases are the whole word its token belongs to joined with the word right before it, right after it, or
both (by one space or one hyphen each), all content words; the most common phrase (on equal counts the
longer, then the first in order) counts where it occurs in at least ``PHRASE_SHARE`` (50%) of the examples
and contains a word of the label: the first such word is shown as the phrase, and the phrase's other words,
if also in the label, are dropped (``real`` -> ``real estate``, ``natural / gas / oil`` -> ``natural gas /
oil``). The kind does not change, so no share of content-word labels moves with v6; ``top_tokens`` keeps the
single words. One revision after v6's first labels were read (69 of the default SAE's 4,096 changed): the
first version took two-word phrases only and read "commercial real estate" as ``commercial real``, so
three-word phrases were added; no other variant was tried.

A label "has a content word" when its kind is ``token``, ``context`` or ``documents``
(:attr:`LatentLabels.content`). Results are cached under ``<finsae cache>/labels/`` by a key over the
feature extraction (model, SAE, chunking, batching), the texts and the rule's settings and version. The SAE
sweep of :mod:`finsae.pipeline.sae_selection` labels without ``doc_mass`` (rule v4, as it was recorded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from finsae._io import write_parquet
from finsae._paths import cache_dir
from finsae.errors import DataError
from finsae.extract.features import clean_texts
from finsae.extract.model import LoadedModel
from finsae.extract.sae import SAESource, as_sae_source
from finsae.extract.shards import ShardPlan, compute_shard_many, plan_shards, read_shard, read_shard_stats
from finsae.extract.spec import Execution, ExtractionSpec
from finsae.extract.tokenstats import LABEL_EXAMPLES, LatentStats, StatsAccumulator, merge_stats

if TYPE_CHECKING:
    from sae_lens import SAE

__all__ = ["LatentLabels", "LatentStats", "StatsAccumulator", "document_words", "example_phrases",
           "label_latents", "latent_labels", "save_labels", "with_phrase"]

logger = logging.getLogger(__name__)

TOKEN_SHARE = 0.25
CONTEXT_SHARE = 0.4
CONTEXT_LIFT = 2.0
DOC_SHARE = 0.5
DOC_LIFT = 2.0
DOC_MIN_EFFECTIVE = 5.0
PHRASE_SHARE = 0.5
PHRASE_MIN_EXAMPLES = 5
#: The label rule's version (module docstring): part of the label cache key and of explanation manifests.
LABEL_RULE = "v6"
CONTENT_KINDS = ("token", "context", "documents")

BOILERPLATE = frozenset("""
company companies inc corp corporation incorporated co ltd llc plc limited holding holdings group groups
headquartered headquarters founded based located formerly known name named changed subsidiary subsidiaries
provide provides provided providing offer offers offered offering operate operates operated operating
operation operations engage engages engaged segment segments division divisions business businesses include
includes including included well also various variety range wide number primarily principally mainly along
together through within across around worldwide global international national nationwide regional local
customers clients products product services service solutions solution related addition additionally
markets market sells sell sold serves serve serving manufactures designs develops distributes owns owned
year years since first one two three four five six seven eight nine ten hundred thousand million billion
approximately around about several many new old largest large leading leader
""".split())

PLACES = frozenset("""
alabama alaska arizona arkansas california colorado connecticut delaware florida georgia hawaii idaho
illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota mississippi
missouri montana nebraska nevada hampshire jersey mexico york carolina dakota ohio oklahoma oregon
pennsylvania rhode island tennessee texas utah vermont virginia washington wisconsin wyoming columbia
atlanta austin baltimore boston charlotte chicago cincinnati cleveland columbus dallas denver detroit houston
indianapolis jacksonville kansas angeles las vegas memphis miami milwaukee minneapolis nashville orleans
philadelphia phoenix pittsburgh portland raleigh sacramento antonio diego francisco jose seattle louis
tampa tucson tulsa omaha oakland irvine stamford greenwich princeton cambridge arlington alexandria
richmond norfolk hartford providence buffalo rochester albany newark hoboken jose palo alto santa clara
mountain view menlo sunnyvale cupertino redmond bellevue plano scottsdale tempe boulder salt lake city
county counties state states united america american americas north south east west northern southern
eastern western central midwest northeast southeast southwest northwest pacific atlantic gulf coast
canada canadian mexico europe european asia asian africa african australia china chinese japan japanese
india indian germany german france french britain british kingdom england london ireland irish israel
brazil latin netherlands switzerland swiss italy spain korea singapore hong kong taiwan bermuda cayman
puerto rico islands island bay beach valley river
""".split())

NUMBERS = frozenset("""
zero one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred
thousand million billion first second third fourth fifth percent
""".split())

NON_CONTENT = frozenset(ENGLISH_STOP_WORDS) | BOILERPLATE | PLACES | NUMBERS


@dataclass(frozen=True)
class LatentLabels:
    """Per-latent labels and examples.

    Attributes:
        table: one row per latent: ``latent``, ``label``, ``kind`` (token / context / documents / function /
            dead),
            ``top_tokens`` (its top content words), ``n_active_tokens`` (pooled tokens where it fires),
            ``activation_mass``, ``content_share`` (share of its mass on content-word tokens).
        examples: ``latent, rank, value, doc_id, token, snippet`` for the strongest activations.
    """

    table: pd.DataFrame
    examples: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def label(self, latent: int) -> str:
        return str(self.table.at[latent, "label"])

    def labels(self) -> pd.Series:
        return self.table["label"]

    @property
    def content(self) -> pd.Series:
        """Whether each latent's label is made of content words (kind ``token``, ``context`` or
        ``documents``)."""
        return self.table["kind"].isin(CONTENT_KINDS)


def _clean_token(text: str) -> str:
    return text.replace("\n", " ").strip().lower()


def _labels_key(plan: ShardPlan, n_examples: int, n_label_tokens: int, context: int) -> str:
    """The label cache's folder name: the feature plan's key (model, SAE, chunking, batching), each shard's
    name (it hashes the shard's document ids and texts) and the rule's settings and version."""
    parts = [plan.key, [s.path.name for s in plan.shards], n_examples, n_label_tokens, context, LABEL_RULE]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def latent_labels(loaded: LoadedModel, sae: SAESource | SAE, texts: Sequence[object], doc_ids: Sequence[str],
                  *, spec: ExtractionSpec | None = None, n_examples: int = LABEL_EXAMPLES,
                  n_label_tokens: int = 3, context: int = 8, shard_size: int = 256, cache: bool = True,
                  progress: bool | None = None) -> LatentLabels:
    """Labels and top examples of every latent of ``sae`` over ``texts`` (see the module docstring).

    ``loaded`` is a :class:`finsae.extract.LoadedModel`, ``sae`` an :class:`finsae.extract.sae.SAESource`
    (e.g. :class:`finsae.extract.SAEHandle`) or a sae_lens SAE. The statistics are those of the feature
    extraction ``spec`` (default :class:`~finsae.extract.ExtractionSpec`: its chunking and batches) shard by
    shard: a shard whose features were extracted with ``label_stats`` (as ``finsae benchmark`` does) has them
    stored beside it, and only the other shards are encoded (:func:`finsae.extract.shards.compute_shard_many`,
    which also rewrites their feature shards, identical). A label-cache hit loads neither model nor SAE."""
    source = as_sae_source(sae)
    if len(doc_ids) != len(texts):
        raise DataError(f"doc_ids has {len(doc_ids)} entries but there are {len(texts)} texts")
    plan = plan_shards(loaded, source, texts, doc_ids, spec, Execution(shard_size=shard_size))
    folder = cache_dir() / "labels" / _labels_key(plan, n_examples, n_label_tokens, context)
    if cache and (folder / "labels.parquet").is_file() and (folder / "examples.parquet").is_file():
        try:
            table = pd.read_parquet(folder / "labels.parquet")
            examples = pd.read_parquet(folder / "examples.parquet")
            table["top_tokens"] = table["top_tokens"].map(list)
            logger.info("latent labels from the cache %s", folder)
            return LatentLabels(table.set_index("latent", drop=False), examples)
        except Exception as exc:  # unreadable: recompute
            logger.warning("latent label cache %s is unreadable (%s): recomputing", folder, exc)
    parts: list[LatentStats] = []
    pooled: list[sp.csr_matrix] = []
    reused = 0
    for shard in plan.shards:
        if not clean_texts(list(shard.texts))[0]:
            continue  # no text in this shard: nothing to count
        stats = read_shard_stats(shard, n_examples)
        features = read_shard(shard, plan.spec.pooling)
        if stats is None or features is None:
            plan.write_config(loaded)
            compute_shard_many(loaded, [(source, plan)], shard.index, progress=progress,
                               stats_examples=n_examples)
            stats = read_shard_stats(shard, n_examples)
            features = read_shard(shard, plan.spec.pooling)
            if stats is None or features is None:
                raise DataError(f"the token statistics or features of shard {shard.path.name} were written "
                                f"but cannot be read back from {plan.folder}")
        else:
            reused += 1
        if features.matrix.shape[0] != stats.rows:
            raise DataError(f"shard {shard.path.name}: {features.matrix.shape[0]} feature rows but token "
                            f"statistics of {stats.rows} documents")
        parts.append(stats)
        pooled.append(features.matrix)
    if not parts:
        raise DataError("no document has text to label latents with")
    logger.info("latent labels: token statistics of %d shard(s), %d stored by the feature pass", len(parts),
                reused)
    keep, _ = clean_texts(texts)
    result = label_latents(merge_stats(parts), loaded.tokenizer, [str(texts[k]) for k in keep],
                           [str(doc_ids[k]) for k in keep], n_label_tokens=n_label_tokens, context=context,
                           doc_mass=sp.vstack(pooled, format="csr"))
    if cache:
        save_labels(result, folder)
    return result


WORD = re.compile(r"[a-z][a-z'-]*[a-z]")


def _word_counts(texts: Sequence[str]) -> tuple[Counter[str], Counter[str]]:
    """Occurrences of every whole word of ``texts`` and the number of texts holding it (one regex pass)."""
    counts: Counter[str] = Counter()
    docs: Counter[str] = Counter()
    for t in texts:
        found = WORD.findall(t.lower())
        counts.update(found)
        docs.update(set(found))
    return counts, docs


def corpus_words(texts: Sequence[str], min_count: int = 3,
                 counts: Counter[str] | None = None) -> set[str]:
    """Whole words (lower case, letters) used at least ``min_count`` times in ``texts``: a token counts as a
    word only if it is one of these (not a piece of a longer word)."""
    if counts is None:
        counts = _word_counts(texts)[0]
    return {w for w, c in counts.items() if c >= min_count}


def is_content_word(word: str, words: set[str]) -> bool:
    """A business word: a whole word of the corpus, three letters or more, not a stopword, corporate
    boilerplate, a number or a place (:data:`NON_CONTENT`)."""
    return len(word) >= 3 and word in words and word not in NON_CONTENT and WORD.fullmatch(word) is not None


_NEXT = re.compile(r"([ -])([A-Za-z][A-Za-z']*[A-Za-z])(?![A-Za-z])")
_PREV = re.compile(r"(?<![A-Za-z])([A-Za-z][A-Za-z']*[A-Za-z])([ -])$")


def example_phrases(left: str, mid: str, right: str, words: set[str]) -> set[str]:
    """The phrases of one example (rule v6, module docstring): the whole word that the token ``mid`` belongs
    to in ``left + mid + right``, joined with the word right before it, the word right after it, or both, by
    one space or hyphen each, where all are content words (:func:`is_content_word`); lower case, the
    separators kept."""
    full = left + mid + right
    s = len(left) + len(mid) - len(mid.lstrip())
    e = len(left) + len(mid.rstrip())
    if s >= e or not any(ch.isalpha() for ch in full[s:e]):
        return set()
    while s > 0 and full[s - 1].isalpha():
        s -= 1
    while e < len(full) and full[e].isalpha():
        e += 1
    word = full[s:e].lower()
    if not is_content_word(word, words):
        return set()
    out = set()
    after = _NEXT.match(full, e)
    nxt = f"{after.group(1)}{after.group(2).lower()}" if after is not None else ""
    if nxt and is_content_word(nxt[1:], words):
        out.add(word + nxt)
    else:
        nxt = ""
    before = _PREV.search(full[:s])
    prev = f"{before.group(1).lower()}{before.group(2)}" if before is not None else ""
    if prev and is_content_word(prev[:-1], words):
        out.add(prev + word)
        if nxt:
            out.add(prev + word + nxt)
    return out


def with_phrase(top_words: list[str], phrases: Counter[str], n_examples: int,
                min_share: float = PHRASE_SHARE, min_examples: int = PHRASE_MIN_EXAMPLES) -> list[str]:
    """``top_words`` with the examples' dominant phrase shown in place of the word it contains (rule v6):
    ``phrases`` counts each phrase once per example, over ``n_examples`` examples."""
    if n_examples < min_examples or not phrases:
        return top_words
    count, _, phrase = min((-n, -len(re.split(r"[ -]", p)), p) for p, n in phrases.items())
    if -count < min_share * n_examples:
        return top_words
    parts = set(re.split(r"[ -]", phrase))
    out: list[str] = []
    shown = False
    for w in top_words:
        if w in parts:
            if not shown:
                out.append(phrase)
                shown = True
        else:
            out.append(w)
    return out if shown else top_words


def _has_negative(m: sp.spmatrix | np.ndarray) -> bool:
    values = np.asarray(m.data if sp.issparse(m) else m)
    return bool(values.size) and float(np.min(values)) < 0


def document_words(doc_mass: sp.spmatrix | np.ndarray, texts: Sequence[str], n_tokens: np.ndarray,
                   words: set[str], *, n_words: int = 2, min_share: float = DOC_SHARE,
                   min_lift: float = DOC_LIFT, min_effective: float = DOC_MIN_EFFECTIVE,
                   block: int = 512) -> list[list[str]]:
    """Per latent (column of ``doc_mass``, documents x latents, non-negative), the at most ``n_words``
    content words of the documents it fires in: the ``documents`` rule of the module docstring (share ``r``
    of its activation in documents holding the word, null rate ``b`` the larger of the document and token
    rates, ``r >= min_share``, ``r >= min_lift * b``, ranked by ``r log(r / b)``; none for a latent spread
    over fewer than ``min_effective`` documents). ``n_tokens``: tokens per document (the token-rate null)."""
    mass = sp.csc_matrix(doc_mass, dtype=np.float64)
    n_docs, n_lat = mass.shape
    if n_docs != len(texts) or len(n_tokens) != n_docs:
        raise DataError(f"document activations have {n_docs} rows for {len(texts)} texts and "
                        f"{len(n_tokens)} token counts")
    if _has_negative(mass):
        raise DataError("document activations must be non-negative (pooled SAE latents)")
    found = [{w for w in WORD.findall(t.lower()) if is_content_word(w, words)} for t in texts]  # one scan
    vocab = sorted(set().union(*found))
    col = {w: k for k, w in enumerate(vocab)}
    rows: list[int] = []
    cols: list[int] = []
    for d, present in enumerate(found):
        rows.extend([d] * len(present))
        cols.extend(col[w] for w in present)
    holds = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_docs, len(vocab)))
    n_tok = np.asarray(n_tokens, dtype=np.float64)
    doc_rate = np.asarray(holds.sum(axis=0)).ravel() / max(n_docs, 1)
    tok_rate = (holds.T @ n_tok) / max(float(n_tok.sum()), 1.0)
    null = np.maximum(doc_rate, tok_rate)
    total = np.asarray(mass.sum(axis=0)).ravel()
    square = np.asarray(mass.multiply(mass).sum(axis=0)).ravel()
    effective = np.divide(total ** 2, square, out=np.zeros(n_lat), where=square > 0)
    out: list[list[str]] = [[] for _ in range(n_lat)]
    for lo in range(0, n_lat, block):
        hi = min(lo + block, n_lat)
        share = np.asarray((mass[:, lo:hi].T @ holds).todense()) if len(vocab) else np.zeros((hi - lo, 0))
        for j in range(lo, hi):
            if total[j] <= 0 or effective[j] < min_effective:
                continue
            r = share[j - lo] / total[j]
            ok = np.flatnonzero((r >= min_share) & (r >= min_lift * null) & (null > 0))
            if ok.size:
                score = r[ok] * np.log(r[ok] / null[ok])
                best = ok[np.argsort(-score, kind="stable")[:n_words]]
                out[j] = [vocab[k] for k in best]
    return out


def label_latents(stats: LatentStats, tok, texts: Sequence[str], doc_ids: Sequence[str], *,
                  n_label_tokens: int = 3, context: int = 8, min_token_share: float = TOKEN_SHARE,
                  min_context_share: float = CONTEXT_SHARE,
                  doc_mass: sp.spmatrix | np.ndarray | None = None) -> LatentLabels:
    """Labels from ``stats`` (see the module docstring for the rule); ``texts`` / ``doc_ids`` by document
    row. ``doc_mass`` (documents x latents, the pooled features of the same rows) enables the ``documents``
    kind; without it, or where it has negative values (an SAE with signed activations: a warning), a latent
    falls from ``context`` straight to ``function`` (rule v4)."""
    counts, word_df = _word_counts(texts)
    words = corpus_words(texts, counts=counts)
    vocab = stats.mass.shape[1]
    in_docs: list[list[str]] = [[] for _ in range(stats.mass.shape[0])]
    if doc_mass is not None:
        if doc_mass.shape[1] != stats.mass.shape[0]:
            raise DataError(f"document activations have {doc_mass.shape[1]} latents, the statistics "
                            f"{stats.mass.shape[0]}")
        if _has_negative(doc_mass):  # an SAE with signed activations: no activation mass to read
            logger.warning("the SAE's pooled activations have negative values: latent labels without the "
                           "documents kind (rule v4)")
        else:
            n_tokens = np.bincount(stats.docs.astype(np.int64), minlength=len(texts))[: len(texts)]
            in_docs = document_words(doc_mass, texts, n_tokens, words)
    decoded: dict[int, str] = {}

    def word_of(t: int) -> str:
        if t not in decoded:
            decoded[t] = _clean_token(tok.decode([int(t)]))
        return decoded[t]

    special = set(tok.all_special_ids)
    idf = np.log((stats.n_docs + 1) / (stats.doc_freq + 1)) + 1.0  # smoothed document-frequency IDF
    present = np.flatnonzero(stats.doc_freq > 0)
    content = np.zeros(vocab, dtype=bool)
    for t in present:
        content[t] = int(t) not in special and is_content_word(word_of(int(t)), words)
    n_docs = max(len(texts), 1)
    examples, rows = [], []
    n_examples = stats.top_val.shape[0]
    for j in range(stats.mass.shape[0]):
        lo, hi = stats.mass.indptr[j], stats.mass.indptr[j + 1]
        cols, vals = stats.mass.indices[lo:hi], stats.mass.data[lo:hi]
        total = float(vals.sum())
        # the strongest examples and the content words around them
        ctx: Counter = Counter()
        phr: Counter[str] = Counter()
        n_ex = 0
        for r in range(n_examples):
            if stats.top_val[r, j] <= 0:
                break
            pos = int(stats.top_pos[r, j])
            doc = int(stats.docs[pos])
            a, b = pos, pos
            while a > 0 and pos - a < context and stats.docs[a - 1] == doc:
                a -= 1
            while b + 1 < len(stats.ids) and b - pos < context // 2 and stats.docs[b + 1] == doc:
                b += 1
            left = tok.decode([int(t) for t in stats.ids[a:pos]])
            mid = tok.decode([int(stats.ids[pos])])
            right = tok.decode([int(t) for t in stats.ids[pos + 1: b + 1]])
            examples.append({"latent": j, "rank": r, "value": float(stats.top_val[r, j]),
                             "doc_id": str(doc_ids[doc]), "token": mid,
                             "snippet": f"{left}[[{mid}]]{right}".replace("\n", " ")})
            around = WORD.findall(f"{left} {mid} {right}".lower())
            ctx.update({w for w in around if is_content_word(w, words)})
            phr.update(example_phrases(left, mid, right, words))
            n_ex += 1
        if not stats.active[j]:
            rows.append({"latent": j, "label": "(never active)", "kind": "dead", "top_tokens": [],
                         "n_active_tokens": 0, "activation_mass": 0.0, "content_share": 0.0})
            continue
        is_c = content[cols]
        share = float(vals[is_c].sum() / total) if total > 0 else 0.0
        order = np.argsort(-(vals * idf[cols]) * is_c, kind="stable")
        top_words: list[str] = []
        for c in order:
            if not is_c[c]:
                break
            w = word_of(int(cols[c]))
            if w not in top_words:
                top_words.append(w)
            if len(top_words) == n_label_tokens:
                break
        need = min_context_share * max(n_ex, 1)
        # enriched around the examples: in at least CONTEXT_SHARE of them and CONTEXT_LIFT x its document rate
        near = sorted(((n * np.log(n_docs / max(word_df[w], 1)), w, n) for w, n in ctx.items()
                       if n >= need and n / max(n_ex, 1) >= CONTEXT_LIFT * word_df[w] / n_docs),
                      reverse=True)
        if share >= min_token_share and top_words:
            kind, label = "token", " / ".join(with_phrase(top_words, phr, n_ex))
        elif near:
            kind, label = "context", "near: " + ", ".join(w for _, w, _ in near[:2])
        else:
            raw = [word_of(int(cols[c])) for c in np.argsort(-vals, kind="stable")[:n_label_tokens]]
            shown = [f"'{w}'" if not any(ch.isalnum() for ch in w) else w for w in raw if w]
            if in_docs[j]:
                kind, label = "documents", " / ".join(shown[:2]) + " in: " + ", ".join(in_docs[j])
            else:
                kind, label = "function", " / ".join(shown) + " (no business word)"
        rows.append({"latent": j, "label": label, "kind": kind, "top_tokens": top_words,
                     "n_active_tokens": int(stats.active[j]), "activation_mass": total,
                     "content_share": share})
    table = pd.DataFrame(rows).set_index("latent", drop=False)
    return LatentLabels(table, pd.DataFrame(examples, columns=["latent", "rank", "value", "doc_id", "token",
                                                                "snippet"]))


def save_labels(labels: LatentLabels, folder: str | Path) -> None:
    """Write ``labels.parquet`` and ``examples.parquet`` into ``folder`` (atomically)."""
    folder = Path(folder)
    write_parquet(labels.table.reset_index(drop=True), folder / "labels.parquet")
    write_parquet(labels.examples, folder / "examples.parquet")
