"""Code fingerprints of the rules: a hash of the package modules a job actually imports.

A rule runs ``python -m orthskip COMMAND``; the entry point is the CLI function
``cmd_COMMAND`` in ``orthskip/cli.py``. Its fingerprint covers that function (and the
module-level helpers it calls), ``orthskip/__main__.py`` and the import closure of what it
imports inside the package, found statically: ``import orthskip.x``, ``from orthskip.x
import y``, relative imports, imports inside functions (the CLI and the library import
lazily), ``importlib.import_module`` with a literal name or an f-string prefix, and every
parent package's ``__init__.py`` (Python runs it on import). The rules pass the
fingerprint as a param, so editing a module reruns exactly the jobs whose code imports it
(Snakemake's default rerun triggers include ``params``).

``python workflow/lib/code_fingerprint.py COMMAND`` lists a command's modules.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGE = "orthskip"
ROOT = Path(__file__).resolve().parents[2]  # the checkout: workflow/lib/ -> ./


def module_file(root: Path, name: str) -> Path | None:
    """``orthskip.a.b`` -> root/orthskip/a/b.py or root/orthskip/a/b/__init__.py."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _statements(node: ast.AST) -> Iterator[ast.AST]:
    """Every statement below ``node`` (imports are statements; expressions are skipped)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt | ast.ExceptHandler | ast.match_case):
            yield child
            yield from _statements(child)


def _imported_names(
    nodes: Iterable[ast.AST], module: str, is_package: bool, dynamic: bool = True
) -> Iterator[str]:
    """Dotted names a piece of code may import (``from a import b``: both a and a.b).

    A trailing ``*`` marks a prefix (``import_module(f"orthskip.data.{x}")``): every
    module below it counts, since which one is chosen is known only at run time.
    ``dynamic``: look for ``import_module`` calls too (a walk over every expression).
    """
    for tree in nodes:
        for node in [tree, *_statements(tree)]:
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")
                    keep = len(parts) - node.level + (1 if is_package else 0)
                    base = ".".join([*parts[:keep], *([base] if base else [])])
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names)
        calls = ast.walk(tree) if dynamic else ()
        for node in calls:
            if isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield arg.value
                elif isinstance(arg, ast.JoinedStr) and arg.values:
                    head = arg.values[0]
                    if isinstance(head, ast.Constant) and isinstance(head.value, str):
                        yield head.value.rstrip(".") + ".*"


@functools.cache
def _file_imports(text: str, module: str, is_package: bool) -> tuple[str, ...]:
    """The names one module's source may import; cached by content (rules share most)."""
    tree = ast.parse(text, filename=module)
    dynamic = "import_module" in text
    return tuple(_imported_names([tree], module, is_package, dynamic))


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id == "import_module"


def _resolve(names: Iterable[str], modules: dict[str, Path]) -> set[str]:
    """Package modules among ``names``, with every parent package (its __init__ runs)."""
    found = set()
    for name in names:
        if name.endswith(".*"):
            prefix = name[:-2]
            found.update(m for m in modules if m == prefix or m.startswith(prefix + "."))
        elif _in_package(name) and name in modules:
            found.add(name)
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


def import_closure(
    start: Iterable[str], root: Path = ROOT, opaque: frozenset[str] = frozenset()
) -> set[str]:
    """Every package module that importing ``start`` (dotted names) can load; the
    imports of ``opaque`` modules are not followed."""
    modules = _package_modules(root)
    todo = sorted(_resolve(start, modules))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in opaque:
            continue
        path = modules[name]
        names = _file_imports(path.read_text(), name, path.name == "__init__.py")
        todo.extend(_resolve(names, modules) - seen)
    return seen


def _cli_entry(command: str, root: Path) -> tuple[list[str], set[str]]:
    """Source of ``cmd_COMMAND`` plus the cli.py helpers it calls, and what they import."""
    path = root / PACKAGE / "cli.py"
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    entry = "cmd_" + command.replace("-", "_")
    if entry not in functions:
        commands = sorted(n[4:].replace("_", "-") for n in functions if n.startswith("cmd_"))
        raise ValueError(
            f"code_fingerprint: {path} has no {entry}() for command {command!r}; "
            f"commands: {', '.join(commands)}"
        )
    used, todo = set(), [entry]
    while todo:  # module-level helpers the entry calls, transitively
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        refs = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)}
        todo.extend(refs & functions.keys())
    nodes = [functions[n] for n in sorted(used)]
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    sources = [ast.get_source_segment(text, n) or "" for n in nodes]
    names = set(_imported_names([*top, *nodes], f"{PACKAGE}.cli", False))
    return sources, names


def code_files(command: str, root: Path = ROOT) -> list[Path]:
    """The package files whose whole content a command's fingerprint covers (not cli.py)."""
    _, names = _cli_entry(command, root)
    # __main__ imports the whole cli module, whose other commands' lazy imports are not
    # this command's: cli.py counts through _cli_entry's function sources only.
    cli = f"{PACKAGE}.cli"
    closure = import_closure([*names, f"{PACKAGE}.__main__"], root, frozenset({cli})) - {cli}
    modules = _package_modules(root)
    return sorted(modules[m] for m in closure)


def code_fingerprint(command: str, root: Path = ROOT) -> str:
    """sha256 over the sorted (path, content) of the command's code; 16 hex digits."""
    sources, _ = _cli_entry(command, root)
    digest = hashlib.sha256()
    for source in sources:
        digest.update(b"cli.py\0" + source.encode() + b"\0")
    for path in code_files(command, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {code_fingerprint(arg)}")
        for f in code_files(arg):
            print(f"  {f.relative_to(ROOT)}")
