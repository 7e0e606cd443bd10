"""Package attributes imported on first use (PEP 562), so importing a package, or one of
its submodules, does not load everything it exports."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def exports(package: str, names: dict[str, tuple[str, str]]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
  """(__getattr__, __dir__) for `package`, whose `names` map to (module, attribute)."""

  def getattr_(name: str) -> Any:
    if name not in names:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module, attribute = names[name]
    return getattr(importlib.import_module(module), attribute)

  def dir_() -> list[str]:
    return sorted(set(vars(importlib.import_module(package))) | set(names))

  return getattr_, dir_
