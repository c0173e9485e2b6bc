"""The one exception type for a user's mistake (an option, a path, a file's content).

Raised anywhere, from the config parser to a loader or the model builder; the CLI helper turns
it into one `error:` line on stderr and exit status 2. Defined here, below every package, so
loaders and models can raise it without importing engine.
"""


class ConfigError(ValueError):
    """A user mistake in the command line, config or input data: one line, exit status 2."""
