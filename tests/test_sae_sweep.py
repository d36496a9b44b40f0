"""The pre-registered SAE sweep (finsae.pipeline.sae_selection) on the tiny model and the bundled companies:
corpus and held-out rule, activations on disk, both stages, the choice rule, resumption."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from finsae.errors import DataError
from finsae.extract import LoadedModel
from finsae.extract.sae import load_sae
from finsae.extract.train import read_activations, write_activation_shards
from finsae.pipeline.sae_selection import (
    HOLDOUT_BELOW,
    Sweep,
    SweepPlan,
    choose,
    sweep_corpus,
    text_sha,
)

from .conftest import WORDS, tiny_sae


def test_corpus_takes_every_description_then_profiles_to_the_budget_and_holds_out_by_sha():
    desc = pd.Series(["banks lend money", "oil gas drilling", "banks lend money"], index=["A", "B", "C"])
    profiles = [f"profile text number {k}" for k in range(200)] + ["oil gas drilling"]
    c = sweep_corpus(desc, profiles, None, token_budget=40, count_tokens=lambda t: len(t.split()))
    assert c.texts[:2] == ["banks lend money", "oil gas drilling"] and list(c.tickers) == ["A", "B"]
    assert c.n_descriptions == 2 and len(set(c.texts)) == len(c.texts)  # duplicates skipped
    assert 40 <= c.tokens.sum() < 44  # stops at the first text that reaches the budget
    assert (c.holdout == np.array([text_sha(t)[:2] < HOLDOUT_BELOW for t in c.texts])).all()
    big = sweep_corpus(desc, profiles, None, token_budget=10**6, count_tokens=lambda t: len(t.split()))
    assert len(big.texts) == 2 + 200  # every distinct profile
    share = big.holdout[2:].mean()
    assert 0.03 < share < 0.2  # about 26 / 256 of the texts, not skewed by the budget's order


def test_choice_rule_floor_ties_and_size():
    t = pd.DataFrame({
        "candidate": ["a", "b", "c", "d"], "M": [0.50, 0.498, 0.40, 0.60],
        "explained_variance": [0.8, 0.8, 0.8, 0.6],  # d misses the floor
        "loss_recovered": [0.9, 0.9, 0.9, 0.9], "content_share": [0.5, 0.7, 0.9, 1.0],
        "d_sae": [4096, 2048, 2048, 8192], "k": [64, 32, 32, 64]})
    assert choose(t) == "b"  # within 0.005 of the leader, higher content share
    assert choose(t.assign(content_share=[0.5, 0.5, 0.9, 1.0])) == "a"  # tie on share: higher M
    assert choose(t.assign(M=[0.5, 0.5, 0.4, 0.6], content_share=0.5)) == "b"  # then the smaller SAE
    with pytest.raises(DataError, match="sanity floor"):
        choose(t.assign(loss_recovered=0.5))


def test_activation_shards_resume_and_refuse_another_corpus(model, tmp_path):
    texts = [" ".join(np.random.default_rng(k).choice(WORDS[:30], 9)) for k in range(30)]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    folder = write_activation_shards(model, texts, hooks, tmp_path / "a", model_id="tiny", max_length=16,
                                     shard_docs=8)
    acts, docs, ids = read_activations(folder, hooks[1])
    assert acts.shape == (len(docs), 32) and docs.max() == 29 and len(ids) == len(docs)
    # equal to a direct forward pass, to bfloat16 precision
    import torch

    tokens = model.to_tokens(texts[3])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hooks[1])
    np.testing.assert_allclose(acts[docs == 3], cache[hooks[1]][0, 1:].numpy(), rtol=2e-2, atol=2e-2)
    shard = folder / "shard_00001.npz"
    before = shard.stat().st_mtime_ns
    shard_2 = folder / "shard_00002.npz"
    shard_2.unlink()  # interrupted: the missing shard is recomputed, the others kept
    with pytest.raises(DataError, match="incomplete"):
        read_activations(folder, hooks[0])
    write_activation_shards(model, texts, hooks, folder, model_id="tiny", max_length=16, shard_docs=8)
    assert shard.stat().st_mtime_ns == before and shard_2.is_file()
    np.testing.assert_array_equal(read_activations(folder, hooks[1])[0], acts)
    with pytest.raises(DataError, match="another corpus"):
        write_activation_shards(model, texts[:-1], hooks, folder, model_id="tiny", max_length=16,
                                shard_docs=8)


def test_sweep_runs_both_stages_chooses_by_rule_and_resumes(model, universe, prices, tmp_path, monkeypatch):
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache"))
    small = universe.subset(list(universe.descriptions("2017").index[:160]))
    tiny_sae(tmp_path / "ref", hook="blocks.1.hook_resid_post", d_sae=24, k=3)
    plan = SweepPlan(layers=(0, 1), stage1_width=24, stage1_k=3, stage2_widths=(16,), stage2_ks=(2,),
                     token_budget=40_000, epochs=2, batch_size=256, max_length=16, eval_docs=8,
                     dead_feature_window=50, ev_floor=-10.0, recovered_floor=-10.0)  # tiny random model
    profiles = [" ".join(np.random.default_rng(k).choice(WORDS[:40], 20)) for k in range(400)]
    loaded = LoadedModel(model, "tiny", "w0")
    sweep = Sweep(plan, tmp_path / "out", loaded, small, prices, profiles=profiles,
                  references={"shipped": tmp_path / "ref"})
    table = sweep.run()
    swept = table[~table["reference"].astype(bool)]
    layer = int(swept.iloc[:2].set_index("candidate").loc[choose(swept.iloc[:2], -10, -10), "layer"])
    assert int(json.loads((tmp_path / "out" / "sweep.json").read_text())["stage1_layer"]) == layer
    assert list(swept["candidate"]) == ["L0-topk-24-k3", "L1-topk-24-k3", f"L{layer}-topk-16-k2",
                                        f"L{layer}-batchtopk-24-k3"]
    for col in ("M", "pw_industry_pre", "pw_sub_industry_pre", "explained_variance", "loss_recovered",
                "dead_share", "content_share", "train_tokens"):
        assert table[col].notna().all(), col
    assert table["chosen"].sum() == 1
    same_layer = swept[swept["layer"] == layer]  # one token budget: every SAE of a layer sees the same tokens
    assert same_layer["train_tokens"].nunique() == 1 and len(same_layer) == 3
    chosen = table.loc[table["chosen"], "candidate"].iloc[0]
    sel = json.loads((tmp_path / "out" / "sae" / "selection.json").read_text())
    assert sel["chosen"] == chosen
    assert sel["replaces_shipped"] == (sel["M"] >= float(table.set_index("candidate").loc["shipped", "M"]))
    assert load_sae(tmp_path / "out" / "sae").cfg.d_sae == table.set_index("candidate").loc[chosen, "d_sae"]
    bt = load_sae(tmp_path / "out" / "candidates" / swept["candidate"].iloc[-1])
    assert "jumprelu" in str(bt.cfg.architecture()).lower() or "batchtopk" in str(bt.cfg.architecture())
    # resumes: nothing is retrained or remeasured
    weights = tmp_path / "out" / "candidates" / "L0-topk-24-k3" / "sae_weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = Sweep(plan, tmp_path / "out", loaded, small, prices, profiles=profiles,
                  references={"shipped": tmp_path / "ref"}).run()
    assert weights.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(again, table)
