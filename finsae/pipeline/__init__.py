"""Pipeline layer: the orchestrators that run the stages in order and write one results folder per run.

Stage packages (data, extract, group, evaluate, backtest, explain, report, export, serve) are libraries of
pure, typed pieces and import only lower stages; everything that reads a config, loads data, calls several
stages and writes results lives here. ``finsae.cli`` and ``finsae.api`` are thin layers over this package.

A benchmark's results folder holds its run store (:mod:`finsae.pipeline.store`): how every text method made
its features and the vectors it grouped. Explanations (:mod:`finsae.pipeline.explain`), exports
(:mod:`finsae.pipeline.export`) and the HTML report (:mod:`finsae.pipeline.report`) read it instead of
re-deriving anything.
"""
