"""Imports run one way: ocicore ← consumer ← publisher, and consumer ← control_plane.

A small AST check over every module (``TYPE_CHECKING`` imports and
``importlib.import_module("…")`` with a literal name count too). The appliance side
(ocicore, consumer) also stays free of the publisher's heavier dependencies, and nothing
imports a CLI module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ocicore", "consumer", "publisher", "control_plane")

# package → top-level modules it must not import
FORBIDDEN: dict[str, frozenset[str]] = {
    "ocicore": frozenset({"consumer", "publisher", "control_plane", "rich", "jsonschema"}),
    "consumer": frozenset({"publisher", "control_plane", "rich", "jsonschema"}),
    "control_plane": frozenset({"publisher"}),
    "publisher": frozenset({"control_plane"}),
}
CLI_MODULES = frozenset({"consumer.cli", "publisher.cli", "publisher.cli_ops"})


@dataclass(frozen=True)
class Violation:
    file: Path
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.imported} ({self.rule})"


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Absolute names of everything the module imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:  # ``from consumer import cli`` imports consumer.cli
                yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _is_cli(module: str) -> bool:
    return module in CLI_MODULES or module.endswith(".__main__")


def find_violations(root: Path) -> list[Violation]:
    violations = []
    for package in PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            module = module_name(root, file)
            tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
            for line, name in imported_names(tree, module, file.name == "__init__.py"):
                top = name.partition(".")[0]
                if top in FORBIDDEN[package]:
                    rule = f"{package} must not import {top}"
                    violations.append(Violation(file.relative_to(root), line, name, rule))
                elif name in CLI_MODULES and not _is_cli(module):
                    # the CLI is one program spread over layers: its modules (and
                    # ``python -m`` entry points) may build on each other; library code may not
                    rule = "nothing imports a CLI module"
                    violations.append(Violation(file.relative_to(root), line, name, rule))
    return violations


def test_imports_follow_the_layering() -> None:
    assert [p for p in PACKAGES if (ROOT / p).is_dir()] == list(PACKAGES)
    violations = find_violations(ROOT)
    assert not violations, "layering violated:\n" + "\n".join(map(str, violations))


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_checker_catches_violations(tmp_path: Path) -> None:
    for package in PACKAGES:
        _write(tmp_path, f"{package}/__init__.py", "")
    _write(tmp_path, "ocicore/client.py", "import httpx\nfrom consumer.models import Release\n")
    _write(tmp_path, "ocicore/_internal/deep.py", "from .. import digest\nimport publisher\n")
    _write(tmp_path, "consumer/resolve.py", "from ocicore import client\nimport rich.console\n")
    _write(
        tmp_path,
        "consumer/lazy.py",
        "from typing import TYPE_CHECKING\nimport importlib\n"
        "if TYPE_CHECKING:\n    import jsonschema\n"
        "mod = importlib.import_module('control_plane.app')\n",
    )
    _write(tmp_path, "control_plane/app.py", "from consumer import resolve\nimport publisher.cli\n")
    _write(tmp_path, "publisher/push.py", "import control_plane.app\nfrom consumer import cli\n")
    _write(tmp_path, "publisher/cli.py", "from publisher import push\nfrom . import cli_helpers\n")

    found = {(str(v.file), v.line, v.imported) for v in find_violations(tmp_path)}
    assert found == {
        ("ocicore/client.py", 2, "consumer.models"),
        ("ocicore/client.py", 2, "consumer.models.Release"),
        ("ocicore/_internal/deep.py", 2, "publisher"),
        ("consumer/resolve.py", 2, "rich.console"),
        ("consumer/lazy.py", 4, "jsonschema"),
        ("consumer/lazy.py", 5, "control_plane.app"),
        ("control_plane/app.py", 2, "publisher.cli"),
        ("publisher/push.py", 1, "control_plane.app"),
        ("publisher/push.py", 2, "consumer.cli"),
    }


def test_clean_tree_has_no_violations(tmp_path: Path) -> None:
    for package in PACKAGES:
        _write(tmp_path, f"{package}/__init__.py", "")
    _write(tmp_path, "ocicore/digest.py", "import hashlib\nfrom . import errors\n")
    _write(tmp_path, "consumer/resolve.py", "from ocicore.digest import Digest\nimport click\n")
    _write(tmp_path, "control_plane/app.py", "from consumer import resolve\nimport ocicore\n")
    _write(tmp_path, "publisher/push.py", "from consumer import resolve\nimport rich\n")
    _write(tmp_path, "publisher/cli.py", "from publisher import push\n")
    assert find_violations(tmp_path) == []
