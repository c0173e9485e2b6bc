"""The floor every package stands on: user-error type and constants shared by engine, loaders,
models, kernels and bench. Imports nothing heavy and nothing from the packages above it."""
# OpenMP waits must sleep, decided before anything imports torch (common/cpu_wait.py): importing
# any package of the project runs this first, common/device.py included.
from common.cpu_wait import sleep_while_waiting

sleep_while_waiting()
