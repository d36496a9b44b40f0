"""Explanations: latent labels against a brute-force per-token computation on the tiny model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from finsae.errors import DataError
from finsae.explain import latent_labels
from finsae.extract import ExtractionSpec, LoadedModel

from .conftest import HOOK, WORDS

DOCS = [
    "the company makes phones and chips",
    "banks lend money loans to customers in ohio",
    "real estate trusts own offices malls",
    "oil gas drilling in texas",
    "software cloud services retail stores",
    "banks lend money loans in texas",
]


def per_token_activations(model, sae, text):
    tokens = model.to_tokens(text)  # BOS + text
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
        feats = sae.encode(cache[HOOK])[0]
    return tokens[0], feats


@pytest.mark.parametrize("shard_size", [256, 2])  # one shard, or three merged
def test_latent_labels_match_brute_force(model, sae, tmp_path, monkeypatch, shard_size):
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    ids = [f"D{k}" for k in range(len(DOCS))]
    res = latent_labels(LoadedModel(model, "tiny", "w0"), sae, DOCS, ids, n_examples=3,
                        spec=ExtractionSpec(batch_tokens=16), shard_size=shard_size)
    d = int(sae.cfg.d_sae)
    best = np.zeros(d)
    best_doc = np.full(d, "", dtype=object)
    best_tok = np.full(d, "", dtype=object)
    active = np.zeros(d, dtype=int)
    for doc_id, text in zip(ids, DOCS, strict=True):
        tokens, feats = per_token_activations(model, sae, text)
        feats = feats[1:]  # BOS never counts
        active += (feats > 0).sum(dim=0).numpy()
        v, pos = feats.max(dim=0)
        for j in np.flatnonzero(v.numpy() > best):
            best[j] = float(v[j])
            best_doc[j] = doc_id
            best_tok[j] = model.tokenizer.decode([int(tokens[1 + int(pos[j])])])
    np.testing.assert_array_equal(res.table["n_active_tokens"].to_numpy(), active)
    top = res.examples[res.examples["rank"] == 0].set_index("latent")
    alive = np.flatnonzero(best > 0)
    assert set(top.index) == set(alive)
    np.testing.assert_allclose(top.loc[alive, "value"].to_numpy(), best[alive], rtol=1e-5)
    assert (top.loc[alive, "token"].to_numpy() == best_tok[alive]).all()
    assert all(f"[[{t}]]" in s for t, s in zip(top["token"], top["snippet"], strict=True))
    # ranks are in decreasing order of activation; dead latents say so
    for _, g in res.examples.groupby("latent"):
        assert (np.diff(g.sort_values("rank")["value"].to_numpy()) <= 1e-6).all()
    dead = np.flatnonzero(active == 0)
    assert all(res.label(int(j)) == "(never active)" for j in dead)
    words = set(WORDS)
    for j in alive[:20]:
        assert all(w in words for w in res.table.at[j, "top_tokens"])
    # a second call is a cache hit that needs no model
    again = latent_labels(
        LoadedModel(None, "tiny", "w0", loader=lambda: pytest.fail("model loaded")),
        sae,
        DOCS,
        ids,
        n_examples=3,
        spec=ExtractionSpec(batch_tokens=16),
        shard_size=shard_size,
    )
    assert again.table["label"].tolist() == res.table["label"].tolist()


def synthetic_activity(seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d = 120, 40
    x = (rng.random((n, d)) < 0.1) * rng.random((n, d)) * 3
    members = np.zeros(n, dtype=bool)
    members[:20] = True
    x[:20, 0] = 2.0 + rng.random(20)  # latent 0: every member, no one else
    x[20:, 0] = 0.0
    x[:20, 1] = (rng.random(20) < 0.8) * 1.5  # latent 1: most members
    x[20:, 1] = 0.0
    x[:, 2] = 1.0  # latent 2: everyone (generic)
    return sp.csr_matrix(x), members


def test_group_explanation_finds_the_distinguishing_latents():
    from finsae.explain.groups import explain_group

    x, members = synthetic_activity()
    labels = pd.Series({0: "bank", 1: "loans", 2: "company"})
    e = explain_group(x, members, labels=labels, top=3, group="banks")
    assert list(e.latents["latent"][:2]) == [0, 1] and 2 not in set(e.latents["latent"])
    assert list(e.latents["label"][:2]) == ["bank", "loans"]
    a = (x.toarray() > 0)
    p_in, p_out = a[members, 1].mean(), a[~members, 1].mean()
    n = len(members)
    expected = p_in * np.log((p_in + 1 / n) / (p_out + 1 / n))
    assert np.isclose(e.latents.set_index("latent").loc[1, "score"], expected)
    assert e.precision == 1.0 and e.recall == 1.0 and "bank" in e.rule
    with pytest.raises(DataError, match="some but not all"):
        explain_group(x, np.zeros(n, dtype=bool))


def test_pair_explanation_terms_sum_to_the_cosine():
    from finsae.explain.groups import explain_pair
    from finsae.group.similarity import FeatureTransform

    x, _ = synthetic_activity(1)
    z = FeatureTransform("raw").fit_transform(x)
    table = explain_pair(z, 0, 1, top=40)
    assert np.isclose(table["contribution"].sum(), z[0] @ z[1])
    assert np.isclose(table["share"].sum(), 1.0)
    assert table["latent"].iloc[0] == 0  # the strong shared latent leads
    # excess over a typical pair: all latents' excesses sum to cosine - |mean|^2; an always-on latent drops
    mean = z.mean(axis=0)
    full = explain_pair(z, 0, 1, top=z.shape[1], mean=mean)
    assert np.allclose(full["excess"], full["contribution"] - mean[full["latent"]] ** 2)
    unshared = np.ones(z.shape[1], dtype=bool)
    unshared[full["latent"]] = False
    assert np.isclose(full["excess"].sum() - (mean[unshared] ** 2).sum(), z[0] @ z[1] - mean @ mean)
    assert list(full["excess"]) == sorted(full["excess"], reverse=True)
    zz = np.hstack([z, np.full((len(z), 1), 3.0)])  # a latent equally strong in every company
    zz /= np.linalg.norm(zz, axis=1, keepdims=True)
    plain = explain_pair(zz, 0, 1, top=1)
    ranked = explain_pair(zz, 0, 1, top=1, mean=zz.mean(axis=0))
    assert plain["latent"].iloc[0] == z.shape[1] and ranked["latent"].iloc[0] != z.shape[1]


def test_faithfulness_explaining_latents_matter_more_than_random_ones():
    from finsae.explain.groups import explain_group, faithfulness
    from finsae.group.similarity import FeatureTransform

    x, members = synthetic_activity(2)
    z = FeatureTransform("raw").fit_transform(x)
    e = explain_group(x, members, top=2)
    f = faithfulness(z, x, members, e.latents["latent"].to_numpy(), draws=30, pool=10)
    assert f.drop_explaining > 0.3 and f.faithful and f.percentile == 100.0
    g = faithfulness(z, x, members, np.array([5, 6]), draws=30, pool=10)  # arbitrary latents: not faithful
    assert not g.faithful


def test_weighted_faithfulness_uses_the_learned_similarity_and_equals_the_cosine_test_for_unit_weights():
    from finsae.explain.groups import explain_group, faithfulness
    from finsae.group.similarity import FeatureTransform

    x, members = synthetic_activity(2)
    z = FeatureTransform("raw").fit_transform(x)
    lat = explain_group(x, members, top=2).latents["latent"].to_numpy()
    plain = faithfulness(z, x, members, lat, draws=30, pool=10)
    ones = faithfulness(z, x, members, lat, draws=30, pool=10, weights=np.ones(z.shape[1]))
    assert ones.drop_explaining == pytest.approx(plain.drop_explaining) and ones.faithful == plain.faithful
    # weights that ignore the explaining latents: zeroing them no longer lowers the learned similarity much
    w = np.ones(z.shape[1])
    w[lat] = 0.0
    muted = faithfulness(z, x, members, lat, draws=30, pool=10, weights=w)
    assert muted.drop_explaining < plain.drop_explaining


class _WordTok:
    """A tokenizer stand-in: token id k is the word ``vocab[k]`` (with a leading space)."""

    all_special_ids = [0]

    def __init__(self, vocab):
        self.vocab = vocab

    def decode(self, ids):
        return "".join(" " + self.vocab[int(i)] for i in ids)


def test_label_rule_token_context_function_kinds():
    from finsae.explain.labels import StatsAccumulator, label_latents

    vocab = ["<bos>", "banking", "loans", "the", "of", "ohio", "drilling", ",", "company", "wells"]
    w = {v: k for k, v in enumerate(vocab)}
    docs_text = ["the banking of loans", "the company of ohio , drilling wells", "loans of the banking",
                 "drilling of wells the", "company drilling wells of", "banking loans"] + ["the loans"] * 4
    ids, docs = [], []
    for d, t in enumerate(docs_text):
        for word in t.split():
            ids.append(w[word])
            docs.append(d)
    ids, docs = np.array(ids), np.array(docs)
    feats = np.zeros((len(ids), 4), dtype=np.float32)
    feats[np.isin(ids, [w["banking"], w["loans"]]), 0] = 1.0  # latent 0: business tokens
    feats[(ids == w["of"]) & np.isin(docs, [1, 3, 4]), 1] = 2.0  # latent 1: "of" next to drilling / wells
    feats[np.isin(ids, [w["the"], w[","]]), 2] = 1.0  # latent 2: function words in every context
    acc = StatsAccumulator(4, len(vocab), n_examples=5)
    acc.add(torch.from_numpy(feats), ids, docs)
    lab = label_latents(acc.result(), _WordTok(vocab), docs_text, [f"D{k}" for k in range(10)],
                        context=3)
    kinds = lab.table["kind"].tolist()
    assert kinds == ["token", "context", "function", "dead"]
    assert set(lab.label(0).split(" / ")) == {"banking", "loans"}
    assert "drilling" in lab.label(1) or "wells" in lab.label(1)
    assert lab.label(2).endswith("(no business word)") and lab.label(3) == "(never active)"
    assert lab.content.tolist() == [True, True, False, False]
    assert lab.table.at[0, "content_share"] == 1.0 and lab.table.at[2, "content_share"] == 0.0
    # places and boilerplate are never content words, whatever their weight
    from finsae.explain.labels import corpus_words, is_content_word

    words = corpus_words(docs_text, min_count=1)
    assert not is_content_word("ohio", words) and not is_content_word("company", words)
    assert is_content_word("drilling", words) and not is_content_word("drill", words)  # not a corpus word


def test_example_phrases_join_the_whole_word_with_its_content_word_neighbours():
    from finsae.explain.labels import example_phrases

    words = {"real", "estate", "investment", "natural", "gas", "long", "term", "care", "realex", "trust"}
    assert example_phrases(" operates as a", " real", " estate investment trust", words) == {"real estate"}
    assert example_phrases(" a real", " estate", " investment", words) == {
        "real estate", "estate investment", "real estate investment"}
    # a token inside a longer word labels that word; a word next to punctuation or a stopword has no phrase
    assert example_phrases(" through Real", "ex", " Payments", words) == set()  # "payments": no corpus word
    assert example_phrases(" through", " Real", "ex trust", words) == {"realex trust"}
    assert example_phrases(" and the", " real", ", the", words) == set()
    assert example_phrases(" for", " long", "-term care", words) == {"long-term"}
    assert example_phrases(" the", " ,", " real", words) == set()  # the token is no word
    assert example_phrases(" natural", " gas", "", words) == {"natural gas"}
    assert example_phrases(" of", " the", " gas", words) == set()  # "the" is a stopword


def test_with_phrase_needs_half_of_at_least_five_examples_and_a_label_word():
    from collections import Counter

    from finsae.explain.labels import with_phrase

    assert with_phrase(["real"], Counter({"real estate": 5}), 10) == ["real estate"]
    assert with_phrase(["real"], Counter({"real estate": 4}), 10) == ["real"]  # under half
    assert with_phrase(["real"], Counter({"real estate": 4}), 4) == ["real"]  # fewer than 5 examples
    assert with_phrase(["estate", "gas", "real"], Counter({"real estate": 6}), 10) == ["real estate", "gas"]
    # a tie goes to the phrase first in order; it takes the place of the first of its words in the label
    assert with_phrase(["natural", "gas", "oil"], Counter({"natural gas": 7, "gas oil": 7}), 10) == [
        "natural", "gas oil"]
    assert with_phrase(["loans"], Counter({"real estate": 9}), 10) == ["loans"]  # no label word in it
    # on equal counts the longer phrase: "commercial real estate", not "commercial real"
    three = Counter({"commercial real": 6, "real estate": 6, "commercial real estate": 6})
    assert with_phrase(["real", "casual"], three, 10) == ["commercial real estate", "casual"]
    assert with_phrase(["real"], three + Counter({"real estate": 1}), 10) == ["real estate"]


def test_label_rule_v6_shows_the_phrase_a_token_latent_fires_in():
    from finsae.explain.labels import StatsAccumulator, label_latents

    vocab = ["<bos>", "real", "estate", "trust", "the", "banking", "loans", "of"]
    w = {v: k for k, v in enumerate(vocab)}
    docs_text = ["the real estate trust"] * 6 + ["real of the banking loans"] * 4
    ids = np.array([w[x] for t in docs_text for x in t.split()])
    docs = np.repeat(np.arange(10), [4] * 6 + [5] * 4)
    feats = np.zeros((len(ids), 2), dtype=np.float32)
    feats[ids == w["real"], 0] = 1.0  # "real": 6 of its 10 examples in "real estate"
    feats[(ids == w["real"]) & (docs < 6), 0] = 2.0
    feats[ids == w["loans"], 1] = 1.0  # "loans" after "banking" in 4 examples: fewer than 5
    acc = StatsAccumulator(2, len(vocab), n_examples=10)
    acc.add(torch.from_numpy(feats), ids, docs)
    lab = label_latents(acc.result(), _WordTok(vocab), docs_text, [f"D{k}" for k in range(10)], context=3)
    assert lab.table["kind"].tolist() == ["token", "token"]
    assert lab.label(0) == "real estate" and lab.table.at[0, "top_tokens"] == ["real"]
    assert lab.label(1) == "loans"


def test_document_words_share_lift_nulls_and_effective_documents():
    from finsae.explain.labels import document_words

    texts = ["drilling wells"] * 8 + ["banking loans"] * 12
    words = {"drilling", "wells", "banking", "loans"}
    mass = np.zeros((20, 4))
    mass[:8, 0] = 1.0  # only in the oil documents: both their words (share 1, null 0.4, lift 2.5)
    mass[:, 1] = 1.0  # everywhere: share = null, no lift
    mass[:2, 2] = 5.0  # two documents only: fewer than 5 effective documents
    mass[:4, 3] = 1.0  # share of drilling 4/16 < 50%; banking 12/16 with lift 1.25 < 2
    mass[8:, 3] = 1.0
    got = document_words(mass, texts, np.full(20, 10), words)
    assert got == [["drilling", "wells"], [], [], []]
    # a latent whose mass follows document length: the token-rate null takes the lift away
    n_tok = np.array([35] * 8 + [5] * 12)
    by_length = n_tok[:, None].astype(float)
    assert document_words(by_length, texts, n_tok, words) == [[]]
    # ... which the document rate alone would not (share 0.82, document rate 0.4: lift 2.06)
    assert document_words(by_length, texts, np.ones(20), words) == [["drilling", "wells"]]
    assert document_words(mass[:, :1], texts, np.ones(20), words, n_words=1) == [["drilling"]]
    with pytest.raises(DataError, match="non-negative"):
        document_words(-mass, texts, np.ones(20), words)
    with pytest.raises(DataError, match="19 rows"):
        document_words(mass[:19], texts, np.ones(20), words)


def test_label_rule_documents_kind_reads_the_documents_a_function_latent_fires_in():
    from finsae.explain.labels import StatsAccumulator, label_latents

    vocab = ["<bos>", "the", "of", "and", "drilling", "wells", "banking", "loans"]
    w = {v: k for k, v in enumerate(vocab)}
    docs_text = ["the of of and and and drilling wells"] * 8 + ["the of of and and and banking loans"] * 12
    ids = np.array([w[x] for t in docs_text for x in t.split()])
    docs = np.repeat(np.arange(20), 8)
    feats = np.zeros((len(ids), 3), dtype=np.float32)
    feats[(ids == w["the"]) & (docs < 8), 0] = 1.0  # "the", in the oil documents only, far from their words
    feats[ids == w["the"], 1] = 1.0  # "the" everywhere
    feats[ids == w["drilling"], 2] = 1.0  # a business token
    acc = StatsAccumulator(3, len(vocab), n_examples=5)
    acc.add(torch.from_numpy(feats), ids, docs)
    pooled = np.zeros((20, 3))
    np.add.at(pooled, docs, feats)
    names = [f"D{k}" for k in range(20)]
    lab = label_latents(acc.result(), _WordTok(vocab), docs_text, names, context=2, doc_mass=pooled)
    assert lab.table["kind"].tolist() == ["documents", "function", "token"]
    assert lab.label(0) == "the in: drilling, wells"
    assert lab.content.tolist() == [True, False, True]
    # without the document activations: the rule as it was (v4), the latent reads as a function word
    old = label_latents(acc.result(), _WordTok(vocab), docs_text, names, context=2)
    assert old.table["kind"].tolist() == ["function", "function", "token"]
    # signed activations have no activation mass to read documents by: the same labels as without them
    signed = label_latents(acc.result(), _WordTok(vocab), docs_text, names, context=2, doc_mass=-pooled)
    pd.testing.assert_frame_equal(signed.table, old.table)
    with pytest.raises(DataError, match="2 latents"):
        label_latents(acc.result(), _WordTok(vocab), docs_text, names, doc_mass=pooled[:, :2])
