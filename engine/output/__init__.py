"""engine.output: what a run or a prediction writes: the rank-0 writer, reports, figures, tracking, CSVs.

No code runs here: importing a module of this package runs engine/__init__.py and that module only."""
