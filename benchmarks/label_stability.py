"""Split-half stability of the ``documents`` latent labels (label rule v5, :mod:`finsae.explain.labels`).

A label made of the words of the documents a latent fires in is only worth reading if another set of companies
gives the same words. The companies with a 2017 description are split at random into two halves (seeded);
:func:`finsae.explain.labels.document_words` runs on each half alone (the default SAE's cached sum-pooled
features, the corpus's content words, each document's token count from the tokenizer) and on all companies.
For the latents the rule labels on all companies it prints how many get a label in both halves and, for those,
how often the first word of one half's label is among the other half's words, and the mean Jaccard overlap of
the two halves' words; and the same agreement for the halves' labels of *different* latents paired at random
(what agreement chance gives, with these frequent words).

    python benchmarks/label_stability.py [--seed 0] [--vintage 2017] [--out FILE]

The features come from the feature cache (``make run`` fills it; otherwise the language model runs first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _common import emit, machine

from finsae.data import load_universe
from finsae.explain.labels import LABEL_RULE, corpus_words, document_words
from finsae.extract.documents import document_features
from finsae.extract.model import load_model


def _agreement(a: list[list[str]], b: list[list[str]]) -> tuple[float, float]:
    first = [x[0] in y for x, y in zip(a, b, strict=True)] + [y[0] in x for x, y in zip(a, b, strict=True)]
    jac = [len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(a, b, strict=True)]
    return float(np.mean(first)), float(np.mean(jac))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vintage", default="2017")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    universe = load_universe()
    feats = document_features(universe, args.vintage, "sae")
    texts = [str(t) for t in universe.descriptions(args.vintage).loc[feats.tickers]]
    mass = sp.csr_matrix(feats.matrix)
    tok = load_model(lazy=True).tokenizer
    n_tokens = np.array([len(tok(t).input_ids) for t in texts])
    words = corpus_words(texts)  # one vocabulary for the halves and the whole
    rng = np.random.default_rng(args.seed)
    half = rng.permutation(len(texts)) % 2 == 0
    parts = []
    for rows in (np.flatnonzero(half), np.flatnonzero(~half)):
        parts.append(document_words(mass[rows], [texts[i] for i in rows], n_tokens[rows], words))
    full = document_words(mass, texts, n_tokens, words)
    labelled = [j for j, w in enumerate(full) if w]
    both = [j for j in labelled if parts[0][j] and parts[1][j]]
    a, b = [parts[0][j] for j in both], [parts[1][j] for j in both]
    first, jaccard = _agreement(a, b)
    shuffled = [b[i] for i in rng.permutation(len(b))]
    first_null, jaccard_null = _agreement(a, shuffled)
    emit({
        "machine": machine(),
        "label_rule": LABEL_RULE,
        "vintage": args.vintage,
        "companies": len(texts),
        "halves": [int(half.sum()), int((~half).sum())],
        "latents": mass.shape[1],
        "labelled_on_all": len(labelled),
        "labelled_in_both_halves": len(both),
        "share_labelled_in_both": round(len(both) / max(len(labelled), 1), 3),
        "first_word_in_other_half": round(first, 3),
        "jaccard": round(jaccard, 3),
        "first_word_in_other_half_random_latent": round(first_null, 3),
        "jaccard_random_latent": round(jaccard_null, 3),
        "seed": args.seed,
    }, args.out)


if __name__ == "__main__":
    main()
