"""The layer map in docs/architecture.md against the imports in the source.

Every module of ours must be placed in exactly one layer of the table, and every import
of one of our modules must go to a layer its row allows. The table is the source of
truth: change the design there, and this test holds the code to it.
"""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("events", "hydraissue", "projections", "web", "tools")
_ROW = re.compile(r"^\| (\d+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$")


def layer_table() -> list[tuple[int, str, list[str], set[int]]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        number, name, modules, allowed = match.groups()
        patterns = re.findall(r"`([^`]+)`", modules)
        allows = set() if allowed.strip() == "none" else {int(n) for n in allowed.split(",")}
        rows.append((int(number), name.strip(), patterns, allows))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer_of(module: str, table: list[tuple[int, str, list[str], set[int]]]) -> int | None:
    """The most specific row that names the module (an exact name beats a pattern)."""
    exact = [row[0] for row in table if module in row[2]]
    if exact:
        return exact[0]
    matched = [
        row[0]
        for row in table
        if any(fnmatch(module, p) or f"{module}.*" == p for p in row[2])  # a package itself
    ]
    return matched[0] if len(matched) == 1 else None


def our_imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``from a import b`` may name b in a)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def test_the_table_is_there_and_numbered() -> None:
    table = layer_table()
    assert [row[0] for row in table] == [1, 2, 3, 4, 5, 6]
    for number, _, _, allows in table:
        assert all(n < number for n in allows), f"layer {number} may import only lower layers"


def test_every_module_has_exactly_one_layer() -> None:
    table = layer_table()
    unplaced = [m for m in source_modules() if layer_of(m, table) is None]
    assert unplaced == [], f"modules docs/architecture.md does not place: {unplaced}"


def test_no_import_goes_against_the_layers() -> None:
    table = layer_table()
    allowed = {row[0]: row[3] for row in table}
    modules = source_modules()
    wrong: set[str] = set()
    for module, path in modules.items():
        mine = layer_of(module, table)
        assert mine is not None
        for line, name in our_imports(path, module):
            target = resolve(name, modules)
            if target is None or target == module:
                continue
            theirs = layer_of(target, table)
            assert theirs is not None
            if theirs != mine and theirs not in allowed[mine]:
                wrong.add(
                    f"{path.relative_to(ROOT)}:{line}: {module} (layer {mine}) "
                    f"imports {target} (layer {theirs})"
                )
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize(
    ("module", "target"),
    [("web.api", "events.model"), ("hydraissue.evolve", "web.representation")],
)
def test_the_check_would_catch_an_arrow_against_the_layers(module: str, target: str) -> None:
    """A forbidden arrow is caught: the rule is not vacuous."""
    table = layer_table()
    allowed = {row[0]: row[3] for row in table}
    mine, theirs = layer_of(module, table), layer_of(target, table)
    assert mine is not None and theirs is not None
    assert theirs not in allowed[mine]
