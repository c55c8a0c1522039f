"""One exception type for every mistake a user can make; the CLI prints its message without a traceback."""


class LongRopeError(ValueError):
    """Bad input or an impossible request, with a message that names the problem and how to fix it."""
