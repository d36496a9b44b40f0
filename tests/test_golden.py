"""A refactor is not a change of results (issue #14): the numbers of a run equal golden copies made before it.

* ``test_compact_pipeline_matches_golden`` runs a compact benchmark (TF-IDF, price peers, a learned TF-IDF
  similarity, text + price, hybrid and random groups), a pairs backtest inside its groups and an export on the
  bundled data, in every CI run, and compares every table with ``tests/golden/compact*``.
* ``test_make_run_matches_golden`` compares the tables of ``make run`` (``results/``, ``exports/``) with
  ``tests/golden/make_run*`` when those folders are from a finished ``make run`` (a fresh clone has none; the
  language-model steps take minutes).

Golden copies are written with ``python -m tests.golden write <folder> <name>`` (see ``tests/golden.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.golden import compare

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).parent / "golden"


def _compact_run(tmp: Path) -> dict[str, Path]:
    from finsae import api

    for name in ("compact_benchmark.yaml", "compact_pairs.yaml"):
        shutil.copy(HERE / name, tmp / name)
    bench = tmp / "compact"
    pairs = tmp / "compact_pairs"
    api.benchmark(tmp / "compact_benchmark.yaml", bench)
    api.backtest(tmp / "compact_pairs.yaml", pairs)
    export = tmp / "export"
    api.export_run(bench, export, pairs=pairs)
    return {"compact": bench, "compact_pairs": pairs, "compact_export": export}


@pytest.mark.slow
def test_compact_pipeline_matches_golden(tmp_path: Path) -> None:
    folders = _compact_run(tmp_path)
    problems = {name: compare(folder, name) for name, folder in folders.items()}
    assert not any(problems.values()), problems


def test_compare_finds_a_changed_number(tmp_path: Path) -> None:
    """The comparison is not vacuous: one changed digit in one table is reported, by table and column."""
    import numpy as np
    import pandas as pd

    from tests import golden

    folder = tmp_path / "run"
    folder.mkdir()
    table = pd.DataFrame({"method": ["a", "b"], "value": [0.1, 0.2], "n": [1, 2]})
    table.to_parquet(folder / "t.parquet")
    old = golden.GOLDEN
    golden.GOLDEN = tmp_path / "golden"
    try:
        golden.write_golden(folder, "x")
        assert golden.compare(folder, "x") == []
        table.assign(value=[0.1, 0.2 * (1 + 1e-9)]).to_parquet(folder / "t.parquet")
        assert golden.compare(folder, "x") == ["t.parquet: column value differs"]
        table.assign(value=[0.1, np.nextafter(0.2, 1)]).to_parquet(folder / "t.parquet")
        assert golden.compare(folder, "x") == []  # the last bit of a reordered sum is not a change
        table.iloc[::-1].to_parquet(folder / "t.parquet")
        assert golden.compare(folder, "x") == []  # row order is not a change
    finally:
        golden.GOLDEN = old


def test_floats_inside_list_columns_follow_the_float_rule(tmp_path: Path) -> None:
    """A list column of floats (a neighbour's latent contributions) is compared entry by entry like a float
    column: last bits pass, a change at 1e-9 or a changed length is reported; lists of integers stay exact.
    The same holds for a digested table (too many rows to store; its column sums are compared to 1e-10, so
    the change there is 1e-7) and for lists too long to split per entry."""
    import numpy as np
    import pandas as pd

    from tests import golden

    folder = tmp_path / "run"
    folder.mkdir()
    rng = np.random.default_rng(0)
    vals = [rng.random(3) for _ in range(4)]
    long_vals = [rng.random(golden.MAX_EXPLODED + 5) for _ in range(4)]

    def table(values: list, latents: list, long: list) -> pd.DataFrame:
        return pd.DataFrame({"ticker": list("abcd"), "contributions": values,
                             "latents": [np.array(x) for x in latents], "long": long})

    latents = [[1, 2, 3]] * 4
    table(vals, latents, long_vals).to_parquet(folder / "t.parquet")
    old_golden, old_max = golden.GOLDEN, golden.STORE_MAX_ROWS
    golden.GOLDEN = tmp_path / "golden"
    try:
        for store_max, step in ((20_000, 1e-9), (2, 1e-7)):  # stored whole, then digested
            golden.STORE_MAX_ROWS = store_max
            golden.write_golden(folder, "x")
            last_bit = [np.nextafter(v, 1) for v in vals]
            table(last_bit, latents, [np.nextafter(v, 1) for v in long_vals]).to_parquet(folder / "t.parquet")
            assert golden.compare(folder, "x") == []
            changed = [v.copy() for v in vals]
            changed[2][1] *= 1 + step
            table(changed, latents, long_vals).to_parquet(folder / "t.parquet")
            assert golden.compare(folder, "x") != []
            shorter = [v[:2] if k == 1 else v for k, v in enumerate(vals)]
            table(shorter, latents, long_vals).to_parquet(folder / "t.parquet")
            assert golden.compare(folder, "x") != []
            table(vals, [[1, 2, 4]] + latents[1:], long_vals).to_parquet(folder / "t.parquet")
            assert golden.compare(folder, "x") != []
            long_changed = [v.copy() for v in long_vals]
            long_changed[0][-1] *= 1 + step
            table(vals, latents, long_changed).to_parquet(folder / "t.parquet")
            assert golden.compare(folder, "x") != []
            table(vals, latents, long_vals).to_parquet(folder / "t.parquet")
            assert golden.compare(folder, "x") == []
    finally:
        golden.GOLDEN, golden.STORE_MAX_ROWS = old_golden, old_max


def test_a_golden_copy_from_another_cpu_kind_allows_last_bits_only(tmp_path: Path) -> None:
    """Against a copy whose machine.json names another CPU kind, floats may differ by 1e-6 relative (kernels
    sum in another order), not more, and discrete columns not at all; on the same kind the rule is strict."""
    import json

    import pandas as pd

    from tests import golden

    folder = tmp_path / "run"
    folder.mkdir()
    table = pd.DataFrame({"method": ["a", "b"], "value": [0.1, 0.2]})
    table.to_parquet(folder / "t.parquet")
    old = golden.GOLDEN
    golden.GOLDEN = tmp_path / "golden"
    try:
        target = golden.write_golden(folder, "x")
        assert json.loads((target / "machine.json").read_text()) == golden.machine()
        table.assign(value=[0.1, 0.2 * (1 + 1e-9)]).to_parquet(folder / "t.parquet")
        assert golden.compare(folder, "x") == ["t.parquet: column value differs"]  # same kind: strict
        (target / "machine.json").write_text(json.dumps({"torch_cpu": "OTHER", "blas": "other"}))
        assert golden.compare(folder, "x") == []
        table.assign(value=[0.1, 0.2 * (1 + 1e-5)]).to_parquet(folder / "t.parquet")
        assert golden.compare(folder, "x") == ["t.parquet: column value differs"]
        table.assign(method=["a", "c"]).to_parquet(folder / "t.parquet")
        assert golden.compare(folder, "x") == ["t.parquet: column method differs"]
    finally:
        golden.GOLDEN = old


MAKE_RUN = {"make_run_forward_2017": ROOT / "results" / "forward_2017",
            "make_run_baselines": ROOT / "results" / "baselines",
            "make_run_pairs": ROOT / "results" / "pairs",
            "make_run_pairs_forward": ROOT / "results" / "pairs_forward",
            "make_run_export": ROOT / "exports" / "forward_2017"}


#: make-run tables that come from language-model features. Those differ between torch's CPU kernels (AVX2,
#: AVX512, ...) in their last bits (TopK near-ties: 31 of 4,096 latents change their active-token count by
#: up to 1.3% between an AVX2 and an AVX-512 host), which moves the groups of the learned SAE similarities,
#: so these tables are compared only with a golden copy made with the same torch kernels (numpy's BLAS kernel
#: may differ: then at the cross-kind tolerance); the baselines and the taxonomy pairs backtest read no text
#: and are compared with any kind's copy.
LANGUAGE_MODEL = {"make_run_forward_2017", "make_run_pairs_forward", "make_run_export"}


@pytest.mark.parametrize("name", sorted(MAKE_RUN))
def test_make_run_matches_golden(name: str) -> None:
    from tests.golden import golden_for, machine, made_on

    folder = MAKE_RUN[name]
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"{folder} not written: run `make run` first")
    target = golden_for(name)
    kind, record = machine()["torch_cpu"], made_on(target)
    if name in LANGUAGE_MODEL and record is not None and record["torch_cpu"] != kind:
        where = folder.relative_to(ROOT)
        pytest.skip(f"golden {target.name} was made on another kind of CPU ({record['torch_cpu']}) than "
                    f"this one ({kind}); language-model features differ there in their last bits (README: "
                    f"Performance): write this kind's copy with `python -m tests.golden write {where} "
                    f"{name}@{kind}` from a run you trust")
    problems = compare(folder, name)
    assert not problems, problems


def test_a_golden_copy_of_this_cpu_kind_is_preferred(tmp_path: Path) -> None:
    """``<name>@<kind>`` is the copy compared on that kind of CPU; another kind falls back to ``<name>``."""
    import json

    import pandas as pd

    from tests import golden

    folder = tmp_path / "run"
    folder.mkdir()
    pd.DataFrame({"method": ["a"], "value": [0.1]}).to_parquet(folder / "t.parquet")
    old = golden.GOLDEN
    golden.GOLDEN = tmp_path / "golden"
    try:
        golden.write_golden(folder, "x")
        assert golden.golden_for("x") == golden.GOLDEN / "x"
        kind = golden.machine()["torch_cpu"]
        pd.DataFrame({"method": ["a"], "value": [0.3]}).to_parquet(folder / "t.parquet")
        own = golden.write_golden(folder, f"x@{kind}")
        assert golden.golden_for("x") == own and golden.compare(folder, "x") == []
        (own / "machine.json").write_text(json.dumps({"torch_cpu": "OTHER", "blas": "other"}))
        assert not golden.made_here(own) and golden.made_here(golden.GOLDEN / "x")
        assert golden.made_on(own) == {"torch_cpu": "OTHER", "blas": "other"}
        other = golden.GOLDEN / "y@OTHER"  # another kind's own copy is never picked here
        other.mkdir()
        assert golden.golden_for("y") == golden.GOLDEN / "y"
    finally:
        golden.GOLDEN = old
