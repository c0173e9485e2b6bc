"""The floor every package stands on: user-error type and constants shared by engine, loaders,
models, kernels and bench. Imports nothing heavy and nothing from the packages above it."""
