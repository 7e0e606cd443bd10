"""The one exception type of the data pipeline, and its messages in a command's own terms."""

import re
from typing import Mapping

from t5x_lite.config import UserError


class DataError(UserError, ValueError):
  """A user-facing data problem; its message says what was looked for, where, and how to fix it."""


def name_flags(error: UserError, flags: Mapping[str, str]) -> UserError:
  """The error with each setting in `flags` spelled as the flag that sets it.

  Messages name config keys (data.text_feature); a command that takes flags instead maps them
  ({"data.text_feature": "--text-feature"}), so the user reads what they can type.
  """
  if not flags:
    return error
  settings = "|".join(re.escape(s) for s in sorted(flags, key=len, reverse=True))
  text = re.sub(rf"(?<![\w./-])(?:{settings})(?!\w)", lambda m: flags[m[0]], str(error))
  return type(error)(text)
