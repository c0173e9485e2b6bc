"""The one exception type for a user's mistake (an option, a path, a file's content).

Raised anywhere, from the config parser to a loader or the model builder; the CLI helper turns
it into one `error:` line on stderr and exit status 2. Defined here, below every package, so
loaders and models can raise it without importing engine.
"""


class ConfigError(ValueError):
    """A user mistake in the command line, config or input data: one line, exit status 2."""


class WriteError(OSError):
    """A failed write (full disk, quota, read-only folder): one line naming the file and what was
    kept (common/atomic.py raises it); the CLI helper prints it as is, exit status 1."""

    def __str__(self) -> str:
        return self.strerror
