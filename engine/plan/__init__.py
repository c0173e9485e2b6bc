"""engine.plan.plan: the plan: settings not given chosen from the data's fingerprint and the device's speed.

No code runs here: importing a module of this package runs engine/__init__.py and that module only."""
