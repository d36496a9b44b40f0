"""Where the text benchmark's time goes, with features cached: wall and CPU seconds of each phase (issue #18).

The phases of ``finsae benchmark`` (``finsae.pipeline.benchmark.run_benchmark``), one after another in this
process: reading the cached features, building each text vintage (transforms, the pre-period selection, and
for the learned vintage every candidate fit, its scores and the cold-start folds), then scoring each window
(design x frequency). ``finsae benchmark`` itself scores the windows side by side (one thread per CPU), so its
wall time is about the builds plus the windows' CPU seconds over the cores; ``util`` = CPU / wall (2.0: both
cores busy). Run ``python benchmarks/text_benchmark_time.py`` once first if the feature caches are empty
(this script then extracts in process, which is slow and not what it measures).

    python benchmarks/text_benchmark_phases.py [--config backtests/forward_2017.yaml] [--out phases.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import emit, machine
from tqdm.auto import tqdm

from finsae.config import load_benchmark_config
from finsae.data import load_prices, load_universe
from finsae.evaluate.results import DesignInfo
from finsae.pipeline.benchmark import _run_window
from finsae.pipeline.textgroups import TextStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="backtests/forward_2017.yaml")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON figures here")
    args = parser.parse_args()
    cfg = load_benchmark_config(args.config)
    universe = load_universe(cfg.data.companies)
    prices = load_prices(cfg.data.prices, nonpositive=cfg.data.nonpositive_prices,
                         bad_ticks=cfg.data.bad_ticks, splits=cfg.data.splits)
    designs = [DesignInfo.from_config(d, universe) for d in cfg.designs]
    stage = TextStage(cfg, universe, prices)
    phases: list[dict] = []

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        phases.append({"phase": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                       "util": round(cpu / wall, 2) if wall > 0 else None})
        print(f"{name}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
        return out

    timed("cached features", lambda: stage.prefetch([d.text_vintage for d in designs]))
    built = {}
    for v in dict.fromkeys(d.text_vintage for d in designs):
        built[v] = timed(f"build vintage {v}", lambda v=v: stage.vintage(v))
    bar = tqdm(disable=True)
    for dc, info in zip(cfg.designs, designs, strict=True):
        for f in dc.frequencies:
            text = built[info.text_vintage]
            timed(f"window {info.name}/{f}",
                  lambda info=info, f=f, text=text: _run_window(universe, prices, info, f, cfg, bar, text))
    builds = [p for p in phases if not p["phase"].startswith("window")]
    windows = [p for p in phases if p["phase"].startswith("window")]
    emit({"machine": machine(), "config": args.config, "phases": phases,
          "builds_wall_s": round(sum(p["wall_s"] for p in builds), 1),
          "windows_cpu_s": round(sum(p["cpu_s"] for p in windows), 1),
          "total_cpu_s": round(sum(p["cpu_s"] for p in phases), 1)}, args.out)


if __name__ == "__main__":
    main()
