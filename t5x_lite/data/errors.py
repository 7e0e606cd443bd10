"""The one exception type of the data pipeline."""


class DataError(ValueError):
  """A user-facing data problem; its message says what was looked for, where, and how to fix it."""
