"""The base class of errors a user can fix, and the configuration error.

Its own module so that any module can raise these without importing the configuration.
"""


class UserError(Exception):
  """A problem the user can fix (configuration, data, checkpoint, ...). The CLI prints its
  message as one line instead of a traceback; every module's error class derives from it."""


class ConfigError(UserError, ValueError):
  """A user-facing configuration problem; its message says what to fix."""
