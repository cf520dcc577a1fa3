"""Research tooling: controlled comparisons of algorithms as studies of many `sgpo train` runs.

- `studies`: the studies, as data (what each compares, its defaults, how it is reported).
- `plan`: a study's runs and their exact commands (no side effects).
- `state`: what the run folders say (complete, interrupted, made by another command, still running).
- `schedule`: running the plan one run at a time as subprocesses, following each from its folder.
- `stats`: curves, bands, first crossings and targets, in pure Python.
- `report`: results.json, tables.md and the plots.

`sgpo experiment` (`sgpo.cli.experiment`) is the command line over them.
"""
