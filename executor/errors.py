"""The one error class of the executor: a bad model, data, optimizer or run setting the user chose.

from executor.errors import ExecutorConfigError
raise ExecutorConfigError("--stages 8 is more than the model's 4 layers")
"""

from __future__ import annotations

from schedules.errors import UserError


class ExecutorConfigError(UserError):
    """A model, data, optimizer or run setting is invalid; str(error) is the one line to show."""
