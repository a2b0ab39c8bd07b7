"""The one error type for mistakes a user can make (bad flag, config, override, name)."""


class LbmError(Exception):
    """A user-caused error: the CLI prints its message on one line and exits with status 2."""
