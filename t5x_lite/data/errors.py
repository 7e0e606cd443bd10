"""The one exception type of the data pipeline."""

from t5x_lite.config import UserError


class DataError(UserError, ValueError):
  """A user-facing data problem; its message says what was looked for, where, and how to fix it."""
