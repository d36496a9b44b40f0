"""Cache keys are values users' caches depend on: pinned here to what the code before the #14 refactor made.

A change that alters any of them would silently strand every feature cache under ~/.cache/finsae; if a key
must change on purpose, say so in the changelog and change the pinned value with it. The values were computed
with ``finsae.extract.cache.config_key`` / ``plan_shards`` at commit 7512f75, before the key moved into
:meth:`ExtractionSpec.key`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from finsae.errors import DataError
from finsae.extract import Execution, ExtractionSpec, LoadedModel, LoadedSAE, SAEHandle, as_sae_source
from finsae.extract.identity import config_key, shard_key
from finsae.extract.shards import plan_shards

DIGEST = "d" * 32


class FixedSource:
    """An SAE source with fixed identity fields: the key depends on nothing random."""

    def __init__(self, context_size: int | None = 16, dtype_name: str = "torch.float32") -> None:
        self.digest, self.d_sae, self.hook_name = DIGEST, 96, "blocks.1.hook_resid_post"
        self.context_size, self.model_name, self.dtype_name = context_size, "tiny", dtype_name
        self.location = "fixed"

    def load(self) -> object:
        raise AssertionError("a key never loads the SAE")

    def on_device(self, device: str) -> FixedSource:
        return self


MODEL = LoadedModel(None, "tiny", "w0", loader=lambda: pytest.fail("a key never loads the model"))


@pytest.mark.parametrize(("spec", "source", "key"), [
    (ExtractionSpec(), FixedSource(), "818727ba6490c2dcd6c52847"),
    (ExtractionSpec(max_length=16), FixedSource(context_size=None), "818727ba6490c2dcd6c52847"),
    (ExtractionSpec(pooling="mean", overlap=2), FixedSource(dtype_name="torch.bfloat16"),
     "e07b3a7f43a7b70843bd456b"),
    (ExtractionSpec(compile=True), FixedSource(), "f463e06df9ad86e6c65970eb"),
    (ExtractionSpec(pooling="max", max_length=32, overlap=1, batch_tokens=8192), FixedSource(),
     "dbbfa648c4b85461f43cbc69"),
])
def test_the_cache_key_is_pinned(spec, source, key):
    assert spec.key(MODEL, source) == key
    assert config_key("tiny", "w0", DIGEST, spec.pooling, spec.chunk_length(source), spec.overlap,
                      source.dtype_name, spec.compile, spec.batch_tokens) == key
    assert spec.batch_tokens == 8192 or spec.key(MODEL, source) == ExtractionSpec(
        **{**spec.__dict__, "batch_tokens": 4096}).key(MODEL, source)  # the default batch carries no field


def test_the_shipped_features_keep_their_key():
    """The key of ``document_features(load_universe(), "2017", "sae")`` (the shipped SAE on the embedded
    Gemma-3-270M) from the identities they resolve to: the folder users' caches hold."""
    weights = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    gemma = LoadedModel(None, f"google/gemma-3-270m@{weights}", f"{weights}:float32", loader=lambda: None)
    shipped = FixedSource(context_size=512)
    shipped.digest = "185447f8ef5f7e57f4a04b1805ff9184"
    assert ExtractionSpec().key(gemma, shipped) == "18f01efb5cb88dac6e5a27d4"


def test_the_model_and_sae_names_and_execution_are_not_in_the_key():
    """Two specs that resolve to the same model and SAE identities share their features, whatever names led
    there; where and how shards are computed never decides them."""
    source = FixedSource()
    base = ExtractionSpec().key(MODEL, source)
    assert ExtractionSpec(model="elsewhere", tl_name="x", sae="/some/sae").key(MODEL, source) == base
    plan = plan_shards(MODEL, source, ["a b", None], ["A", "B"], run=Execution(shard_size=1, root=Path("/r")))
    ray_plan = plan_shards(MODEL, source, ["a b", None], ["A", "B"],
                           run=Execution(backend="ray", workers=3, shard_size=1, root=Path("/r")))
    assert plan == ray_plan and plan.key == base and plan.spec.max_length == 16
    assert [s.path.name for s in plan.shards] == [f"{shard_key(base, ['A'], ['a b'])}.npz",
                                                  f"{shard_key(base, ['B'], [None])}.npz"]
    assert [s.path.name[:-4] for s in plan.shards] == ["405d7bc8e43c478c336a17ff0d57d4df",
                                                       "47848ae1a84a90ec32bb7b855d17e4e0"]


def test_spec_checks_its_fields():
    with pytest.raises(DataError, match="unknown pooling 'median'"):
        ExtractionSpec(pooling="median")
    with pytest.raises(DataError, match="batch_tokens must be a positive integer"):
        ExtractionSpec(batch_tokens=0)
    with pytest.raises(DataError, match="unknown backend 'spark'"):
        Execution(backend="spark")
    with pytest.raises(DataError, match="shard_size must be at least 1"):
        Execution(shard_size=0)
    assert ExtractionSpec(sae=Path("a/b")).sae == "a/b"  # type: ignore[arg-type]
    assert ExtractionSpec.from_fields({"model": "m", "sae": None, "pooling": "max", "other": 1}) == \
        ExtractionSpec(model="m", pooling="max")


def test_every_sae_kind_is_one_source(sae, tmp_path, monkeypatch):
    """A folder handle and an SAE in memory answer the same protocol with the same identity; a handle
    pickles as its folder (a Ray worker reads the weights itself)."""
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache"))
    sae.save_model(str(tmp_path / "sae"))
    handle, loaded = SAEHandle(tmp_path / "sae"), as_sae_source(sae)
    assert isinstance(loaded, LoadedSAE)
    assert as_sae_source(handle) is handle and as_sae_source(loaded) is loaded
    fields = ("d_sae", "hook_name", "context_size", "model_name", "dtype_name")
    assert [getattr(handle, f) for f in fields] == [getattr(loaded, f) for f in fields]
    assert handle.digest == loaded.digest
    assert loaded.load() is sae and loaded.on_device("cuda") is loaded
    assert handle._sae is not None  # the first digest read the weights (then it is remembered)
    copy = pickle.loads(pickle.dumps(handle))
    assert copy._sae is None and copy.path == handle.path and copy.digest == handle.digest
    assert copy._sae is None  # from the remembered digest
    assert handle.on_device("meta").device == "meta"
