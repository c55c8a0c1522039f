"""The exceptions a user is meant to read: the CLI prints their message as one line, never a traceback."""


class LongRopeError(ValueError):
    """Bad input or an impossible request, with a message that names the problem and how to fix it (exit 2)."""


class EnvironmentFailure(LongRopeError):
    """The machine failed, not the input (a full disk, a permission, memory): the same command may work
    elsewhere or later, so the CLI exits with status 1, not 2."""
