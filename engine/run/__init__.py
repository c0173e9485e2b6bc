"""engine.run: a run: assembled, trained, checkpointed, restored; the step, its precision, devices and processes.

No code runs here: importing a module of this package runs engine/__init__.py and that module only."""
