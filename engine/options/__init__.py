"""engine.options: the options: declared, parsed, made concrete, checked on resume and across cv folds.

No code runs here: importing a module of this package runs engine/__init__.py and that module only."""
