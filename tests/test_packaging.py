"""setup.cfg tells the truth: every package the library imports is declared (in
install_requires, or in an extra where the import is optional), and every declared
requirement is used."""

import ast
import configparser
import importlib.metadata
import os
import re
import sys

from helpers import REPO

# Declared but not imported by t5x-lite, each for a reason setup.cfg gives beside it.
_USED_BY_DEPENDENCIES = {"importlib-resources", "array-record"}


def _canonical(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> tuple[set[str], set[str]]:
  """(install_requires, every extra's requirements) as canonical distribution names."""
  config = configparser.ConfigParser()
  config.read(os.path.join(REPO, "setup.cfg"))

  def names(text: str) -> set[str]:
    return {_canonical(re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0])
            for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}

  extras = set().union(*(names(v) for v in config["options.extras_require"].values()))
  return names(config["options"]["install_requires"]), extras


def _imported_top_level_modules() -> set[str]:
  modules = set()
  for root, _, files in os.walk(os.path.join(REPO, "t5x_lite")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
          if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
          elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
  return {m for m in modules if m not in sys.stdlib_module_names and m != "t5x_lite"}


def test_every_import_is_declared_and_every_requirement_used():
  required, extras = _requirements()
  distributions = importlib.metadata.packages_distributions()
  imported = set()
  undeclared = []
  for module in sorted(_imported_top_level_modules()):
    names = {_canonical(d) for d in distributions.get(module, [module])}
    imported |= names
    if not names & (required | extras):
      undeclared.append(f"{module} (from {sorted(names)})")
  assert not undeclared, f"imported but not declared in setup.cfg: {undeclared}"
  unused = required - imported - _USED_BY_DEPENDENCIES
  assert not unused, f"declared in install_requires but never imported: {sorted(unused)}"


def test_optional_imports_are_in_an_extra_not_required():
  required, extras = _requirements()
  optional = {"torch", "safetensors", "wandb"}
  assert optional <= extras and not optional & required
