"""The library/CLI boundary: nothing outside ``audiokit/cli`` imports ``audiokit.cli``; tests only drive it.

``audiokit/cli`` parses arguments, calls the library and prints. The library, the benchmarks and a
server must work without it, so any import of ``audiokit.cli`` from them is a library function living
in the wrong place. Tests may run commands (``main``, ``build_parser``, a command module's
``register``) but not reach into a command module for anything else.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = {"main", "build_parser"}  # what a test may take from audiokit.cli besides command modules


def _is_cli(module: str) -> bool:
    """``audiokit.cli`` or a module in it (not ``audiokit.client``, the library's WebSocket client)."""
    return module == "audiokit.cli" or module.startswith("audiokit.cli.")


def _cli_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, what)`` of every import of audiokit.cli, including ``importlib.import_module`` strings."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_cli(a.name)]
        elif isinstance(node, ast.ImportFrom) and _is_cli(node.module or ""):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "audiokit":
            found += [(node.lineno, f"audiokit.{a.name}") for a in node.names if a.name == "cli"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _is_cli(node.value) and " " not in node.value:
                found.append((node.lineno, node.value))
    return found


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_library_and_benchmarks_never_import_the_cli():
    cli = ROOT / "audiokit" / "cli"
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _sources("audiokit", "benchmarks")
        if cli not in path.parents and path != ROOT / "audiokit" / "__main__.py"
        for line, what in _cli_imports(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, "library code imports the CLI (move the function into the library):\n" + "\n".join(
        offenders
    )


def _test_offences(path: Path) -> list[str]:
    """Imports of CLI internals in a test, and uses of a command module beyond ``register``."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()  # local names bound to command modules
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "audiokit.cli":
            for alias in node.names:
                if alias.name in DRIVERS:
                    continue
                if (ROOT / "audiokit" / "cli" / f"{alias.name}.py").is_file():
                    modules.add(alias.asname or alias.name)
                else:
                    offences.append(f"{node.lineno}: from audiokit.cli import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audiokit.cli."):
            offences.append(f"{node.lineno}: from {node.module} import ...")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr != "register":
                offences.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return [f"{path.relative_to(ROOT)}:{offence}" for offence in offences]


def test_tests_only_drive_the_cli():
    offenders = [offence for path in _sources("tests") for offence in _test_offences(path)]
    assert not offenders, "tests take library functions from the CLI (import them from the library):\n" + (
        "\n".join(offenders)
    )


def test_the_scan_sees_every_kind_of_import():
    source = (
        "import audiokit.cli\nfrom audiokit.cli.coding import x\nfrom audiokit import cli\n"
        "importlib.import_module('audiokit.cli.eval')\n"
    )
    assert [line for line, _ in _cli_imports(ast.parse(source))] == [1, 2, 3, 4]


def test_every_model_option_has_the_short_form():
    import argparse

    from audiokit.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    with_model = {}
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if "--model" in action.option_strings:
                with_model[name] = action.option_strings
    assert {"encode", "decode", "eval", "bench", "demo", "card"} <= set(with_model)
    assert all("-m" in options for options in with_model.values()), with_model
