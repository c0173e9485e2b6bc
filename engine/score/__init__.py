"""engine.score: scoring: the loop over a split, metrics, decisions, calibration, TTA, ensembles.

No code runs here: importing a module of this package runs engine/__init__.py and that module only."""
