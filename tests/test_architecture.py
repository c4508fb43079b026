"""The project's layering, read from the sources with ``ast`` (nothing imported):

* only the commands touch absl flags: the entry-point scripts, the ``cli`` package (flag definers,
  flags -> config), ``benchmarks/`` and the two ``python -m data.*`` tools; every other module gets
  its settings as arguments or config objects;
* no library module imports a command;
* no import cycle between project modules (function-level imports included: a cycle hidden
  inside a function is still a cycle), and no private name is imported across modules.
"""

from __future__ import annotations

import ast
import os

from tests.conftest import REPO_ROOT

PACKAGES = ("models", "data", "training", "inference", "deconvolution", "cli", "benchmarks")
COMMAND_MODULES = {"data.check", "data.make_synthetic"}
COMMAND_PACKAGES = ("cli", "benchmarks")


def project_modules() -> dict[str, str]:
    """``{dotted module name: path}`` of every project module (tests excluded)."""
    found = {}
    for name in os.listdir(REPO_ROOT):
        if name.endswith(".py"):
            found[name[:-3]] = os.path.join(REPO_ROOT, name)
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO_ROOT, package)):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    dotted = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


def is_command(module: str) -> bool:
    top = module.split(".")[0]
    script = "." not in module and os.path.isfile(os.path.join(REPO_ROOT, module + ".py"))
    library_scripts = {"config", "rundir", "fileio", "losses", "metrics", "precision", "progress"}
    return (
        (script and module not in library_scripts)
        or top in COMMAND_PACKAGES
        or module in COMMAND_MODULES
    )


def imports_of(path: str, module: str):
    """``(imported module, names)`` of every import statement in ``path`` (relative ones
    resolved against ``module``)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]).strip(".")
            yield base, tuple(alias.name for alias in node.names)


def project_edges(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    edges = {}
    for module, path in modules.items():
        targets = set()
        for base, names in imports_of(path, module):
            for name in names:
                if f"{base}.{name}" in modules:
                    targets.add(f"{base}.{name}")
            if base in modules:
                targets.add(base)
        targets.discard(module)
        edges[module] = targets
    return edges


def test_only_commands_use_absl_flags():
    offenders = []
    for module, path in project_modules().items():
        if is_command(module):
            continue
        for base, names in imports_of(path, module):
            if base == "absl.flags" or (base == "absl" and ("flags" in names or "app" in names)):
                offenders.append(module)
    assert not offenders, f"library modules importing absl flags/app: {sorted(set(offenders))}"


def test_no_library_module_imports_a_command():
    modules = project_modules()
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in project_edges(modules).items()
        if not is_command(module)
        for target in targets
        if is_command(target)
    )
    assert not offenders, offenders


def test_no_import_cycles():
    edges = project_edges(project_modules())
    # A package's __init__ importing its own submodules is not a cycle of the layering.
    for module, targets in edges.items():
        edges[module] = {t for t in targets if not t.startswith(module + ".")}
    cycles = _cycles(edges)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    modules = project_modules()
    offenders = []
    for module, path in modules.items():
        for base, names in imports_of(path, module):
            if base in modules and base != module:
                offenders += [f"{module}: {base}.{n}" for n in names if n.startswith("_")]
    assert not offenders, offenders


def _cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found
