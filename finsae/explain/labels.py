"""Words for SAE latents: the tokens and snippets where each latent fires, and a label an analyst can read.

One pass over a corpus (the same chunks and forward pass as extraction; or stored token activations, via
:class:`StatsAccumulator`) collects, per latent ``j``: ``mass[j, t]``, its summed activation on token ``t``;
the documents each token occurs in; and its ``n_examples`` strongest activations with a snippet around each.

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
* ``kind = "function"``: else the raw top tokens, marked ``(no business word)``; ``"dead"``: never active.

A label "has a content word" when its kind is ``token`` or ``context`` (:attr:`LatentLabels.content`).
Results are cached under ``<finsae cache>/labels/`` by a key over the model, the SAE, the chunking, the texts
and the rule's version.
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

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from tqdm.auto import tqdm

from finsae._io import write_parquet
from finsae._paths import cache_dir
from finsae.errors import DataError
from finsae.extract.sae import as_sae_source

logger = logging.getLogger(__name__)

TOKEN_SHARE = 0.25
CONTEXT_SHARE = 0.4
CONTEXT_LIFT = 2.0
CONTENT_KINDS = ("token", "context")

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
        table: one row per latent: ``latent``, ``label``, ``kind`` (token / context / function / dead),
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
        """Whether each latent's label is made of content words (kind ``token`` or ``context``)."""
        return self.table["kind"].isin(CONTENT_KINDS)


def _clean_token(text: str) -> str:
    return text.replace("\n", " ").strip().lower()


def _labels_key(model_id: str, weight_hash: str, sae_digest: str, max_length: int, ids: Sequence[str],
                texts: Sequence[str], n_examples: int, n_label_tokens: int) -> str:
    digest = hashlib.sha256(
        json.dumps([model_id, weight_hash, sae_digest, max_length, n_examples, n_label_tokens, "v3"]).encode()
    )
    for d, t in zip(ids, texts, strict=True):
        digest.update(b"\x00" + str(d).encode() + b"\x01" + str(t).encode())
    return digest.hexdigest()[:32]


def latent_labels(loaded, sae, texts: Sequence[object], doc_ids: Sequence[str], *, n_examples: int = 10,
                  n_label_tokens: int = 3, context: int = 8, max_length: int | None = None,
                  batch_tokens: int = 8192, cache: bool = True, progress: bool | None = None) -> LatentLabels:
    """Labels and top examples of every latent of ``sae`` over ``texts`` (see the module docstring).

    ``loaded`` is a :class:`finsae.extract.LoadedModel`, ``sae`` an :class:`finsae.extract.sae.SAESource`
    (e.g. :class:`finsae.extract.SAEHandle`) or a sae_lens SAE; on a cache hit neither is loaded."""
    source = as_sae_source(sae)
    if len(doc_ids) != len(texts):
        raise DataError(f"doc_ids has {len(doc_ids)} entries but there are {len(texts)} texts")
    max_length = int(max_length or source.context_size or 512)
    key = _labels_key(
        loaded.model_id,
        loaded.weight_hash,
        source.digest,
        max_length,
        [str(d) for d in doc_ids],
        [str(t) for t in texts],
        n_examples,
        n_label_tokens,
    )
    folder = cache_dir() / "labels" / key
    if cache and (folder / "labels.parquet").is_file() and (folder / "examples.parquet").is_file():
        try:
            table = pd.read_parquet(folder / "labels.parquet")
            examples = pd.read_parquet(folder / "examples.parquet")
            table["top_tokens"] = table["top_tokens"].map(list)
            logger.info("latent labels from the cache %s", folder)
            return LatentLabels(table.set_index("latent", drop=False), examples)
        except Exception as exc:  # unreadable: recompute
            logger.warning("latent label cache %s is unreadable (%s): recomputing", folder, exc)
    result = _compute(loaded.model, source.load(), texts, doc_ids, n_examples=n_examples,
                      n_label_tokens=n_label_tokens, context=context, max_length=max_length,
                      batch_tokens=batch_tokens, progress=progress)
    if cache:
        save_labels(result, folder)
    return result


def _compute(
    model,
    sae,
    texts: Sequence[object],
    doc_ids: Sequence[str],
    *,
    n_examples: int,
    n_label_tokens: int,
    context: int,
    max_length: int,
    batch_tokens: int,
    progress: bool | None,
) -> LatentLabels:
    import torch

    from finsae.extract.features import clean_texts, document_chunks, encoded_batches
    from finsae.extract.sae import check_compatible

    hook = check_compatible(model, sae)
    tok = model.tokenizer
    keep, _ = clean_texts(texts)
    chunks = document_chunks(tok, texts, keep, max_length, 0)
    d_sae = int(sae.cfg.d_sae)
    vocab = int(max(len(tok), model.cfg.d_vocab))
    acc = StatsAccumulator(d_sae, vocab, n_examples)
    total = sum(len(c.tokens) - c.pooled_from for c in chunks)
    with torch.inference_mode(), tqdm(total=total, unit="tok", unit_scale=True, desc="label latents",
                                       disable=None if progress is None else not progress) as bar:
        for batch, tokens, mask, feats in encoded_batches(model, sae, hook, chunks, batch_tokens):
            docs = torch.tensor([c.doc for c in batch])[:, None].expand_as(mask)
            acc.add(feats[mask], tokens[mask].numpy(), docs[mask].numpy())
            bar.update(int(mask.sum()))
    texts_kept = [str(texts[k]) for k in keep]
    return label_latents(acc.result(), tok, texts_kept, [str(doc_ids[k]) for k in keep],
                         n_label_tokens=n_label_tokens, context=context)


class StatsAccumulator:
    """Per-latent statistics of token activations, fed batch by batch with ``(feats [n, d_sae], token ids [n],
    document rows [n])`` in text order (the tokens of one chunk contiguous): activation mass per token, tokens
    where each latent fires, the documents each token occurs in, and each latent's ``n_examples`` strongest
    positions."""

    def __init__(self, d_sae: int, vocab: int, n_examples: int) -> None:
        import torch

        self.d_sae, self.vocab, self.n_examples = d_sae, vocab, n_examples
        self.mass = sp.csr_matrix((d_sae, vocab), dtype=np.float64)
        self.active = np.zeros(d_sae, dtype=np.int64)
        self.doc_tokens: set[tuple[int, int]] = set()
        self.ids: list[np.ndarray] = []
        self.docs: list[np.ndarray] = []
        self.offset = 0
        self.top_val = torch.full((n_examples, d_sae), -1.0)
        self.top_pos = torch.zeros((n_examples, d_sae), dtype=torch.long)

    def add(self, feats, ids: np.ndarray, docs: np.ndarray) -> None:
        import torch

        feats = feats.float()
        ids = np.asarray(ids, dtype=np.int64)
        docs = np.asarray(docs, dtype=np.int64)
        rows, cols = feats.nonzero(as_tuple=True)
        vals = feats[rows, cols].double().numpy()
        self.active += np.bincount(cols.numpy(), minlength=self.d_sae)
        self.mass = self.mass + sp.csr_matrix((vals, (cols.numpy(), ids[rows.numpy()])),
                                              shape=(self.d_sae, self.vocab))
        self.doc_tokens.update(zip(docs.tolist(), ids.tolist(), strict=True))
        if len(ids):
            k = min(self.n_examples, len(ids))
            v, i = torch.topk(feats, k, dim=0)  # strongest positions of each latent in this batch
            cand_val = torch.cat([self.top_val, v])
            cand_pos = torch.cat([self.top_pos, i + self.offset])
            best = torch.topk(cand_val, self.n_examples, dim=0).indices
            self.top_val = torch.gather(cand_val, 0, best)
            self.top_pos = torch.gather(cand_pos, 0, best)
        self.ids.append(ids)
        self.docs.append(docs)
        self.offset += len(ids)

    def result(self) -> LatentStats:
        doc_freq = np.zeros(self.vocab, dtype=np.int64)
        if self.doc_tokens:
            np.add.at(doc_freq, np.fromiter((t for _, t in self.doc_tokens), dtype=np.int64), 1)
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        docs = np.concatenate(self.docs) if self.docs else np.zeros(0, np.int64)
        n_docs = len({d for d, _ in self.doc_tokens})
        return LatentStats(self.mass.tocsr(), self.active, doc_freq, n_docs, ids, docs,
                           self.top_val.numpy(), self.top_pos.numpy())


@dataclass(frozen=True)
class LatentStats:
    """What :class:`StatsAccumulator` gathered: ``mass`` (latents x vocabulary, summed activation), ``active``
    (pooled tokens where each latent fires), ``doc_freq`` (documents holding each token) of ``n_docs``, the
    token ids and document rows of every position in order, and per latent the values and positions of its
    strongest activations (``n_examples x d_sae``; value -1 where there are fewer)."""

    mass: sp.csr_matrix
    active: np.ndarray
    doc_freq: np.ndarray
    n_docs: int
    ids: np.ndarray
    docs: np.ndarray
    top_val: np.ndarray
    top_pos: np.ndarray


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


def label_latents(stats: LatentStats, tok, texts: Sequence[str], doc_ids: Sequence[str], *,
                  n_label_tokens: int = 3, context: int = 8, min_token_share: float = TOKEN_SHARE,
                  min_context_share: float = CONTEXT_SHARE) -> LatentLabels:
    """Labels from ``stats`` (see the module docstring for the rule); ``texts`` / ``doc_ids`` by document
    row."""
    counts, word_df = _word_counts(texts)
    words = corpus_words(texts, counts=counts)
    vocab = stats.mass.shape[1]
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
            kind, label = "token", " / ".join(top_words)
        elif near:
            kind, label = "context", "near: " + ", ".join(w for _, w, _ in near[:2])
        else:
            raw = [word_of(int(cols[c])) for c in np.argsort(-vals, kind="stable")[:n_label_tokens]]
            kind, label = "function", " / ".join(f"'{w}'" if not any(ch.isalnum() for ch in w) else w
                                                for w in raw if w) + " (no business word)"
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
