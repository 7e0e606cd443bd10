"""The layout's rules, checked on the source: the library stands without its CLI, and no
module-level import cycle exists (a cycle works or breaks by import order alone)."""

import ast
import os

from helpers import REPO

PACKAGE = os.path.join(REPO, "t5x_lite")


def _modules() -> dict[str, str]:
  """Dotted module name -> path, for every module of the package."""
  found = {}
  for root, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        found[dotted.removesuffix(".__init__")] = path
  return found


def _top_level_imports(path: str) -> list[str]:
  """Modules imported when the file is imported: module-level statements, not those inside
  functions or `if TYPE_CHECKING:` blocks."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  imported = []

  def visit(statements):
    for node in statements:
      if isinstance(node, ast.Import):
        imported.extend(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        imported.extend([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
      elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
        visit(node.body + node.orelse)
      elif isinstance(node, ast.Try):
        visit(node.body + node.orelse + node.finalbody)

  visit(tree.body)
  return imported


def test_no_library_module_imports_argparse_or_the_cli():
  offenders = []
  for module, path in _modules().items():
    if module.startswith("t5x_lite.cli") or module == "t5x_lite.__main__":
      continue
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):  # Anywhere in the file, functions included.
      names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      if any(n == "argparse" or n == "t5x_lite.cli" or n.startswith("t5x_lite.cli.")
             for n in names):
        offenders.append(f"{module} imports {names}")
  assert not offenders, offenders


def test_no_module_level_import_cycle():
  modules = _modules()
  graph, parents = {}, {}
  for module, path in modules.items():
    graph[module] = {name for name in _top_level_imports(path)
                     if name in modules and name != module}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: edges too, but one back to a
    # package whose __init__ is importing this very submodule is how packages load.
    parts = module.split(".")
    parents[module] = {".".join(parts[:i]) for i in range(1, len(parts))}
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "active"
    for nxt in sorted(graph[node] | parents[node]):
      implicit = nxt in parents[node] and nxt not in graph[node]
      if state.get(nxt) == "active" and not implicit:
        cycles.append(stack[stack.index(nxt):] + [node, nxt])
      elif nxt not in state:
        visit(nxt, stack + [node])
    state[node] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [])
  assert not cycles, cycles
