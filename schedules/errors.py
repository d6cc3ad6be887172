"""The base of every error a user can cause (a flag, a config, a file).

Every package raises a subclass with a one-line message naming the problem; the `pipesim` command prints
it and exits with code 2, never a traceback.
"""


class UserError(ValueError):
    """Something the user got wrong; str(error) is the one line to show."""


class OutputError(UserError):
    """A file cannot be written where the user asked (a folder in the way, no permission, no space)."""
