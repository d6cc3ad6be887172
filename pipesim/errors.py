"""The errors a user can cause; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from schedules.errors import UserError


class UsageError(UserError):
    """A bad flag or a bad combination of flags."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError,)
