"""The import rules of docs/architecture.md §1, checked on the source: layers, private names, command modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "epjax"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(path: Path, text: str | None = None) -> list[tuple[str, str | None, int]]:
    """``(module, name or None, line)`` for every import in the file, relative imports resolved."""
    text = path.read_text(encoding="utf-8") if text is None else text
    tree = ast.parse(text, filename=str(path))
    package = _package_of(path) if path.is_relative_to(PACKAGE) else ""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.extend((module, alias.name, node.lineno) for alias in node.names)
    return found


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _violations(path: Path, text: str | None = None) -> list[str]:
    me = _module_name(path)
    my_package = _package_of(path)
    problems = []
    for module, name, line in _imports(path, text):
        if not (module == "epjax" or module.startswith("epjax.")):
            continue
        where = f"{path.relative_to(ROOT)}:{line}"
        parts = module.split(".")
        # A private module may only be imported from inside the package that holds it.
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])
            if _private(part) and not (my_package == owner or my_package.startswith(owner + ".")):
                problems.append(f"{where}: imports the private module {module} from outside {owner}")
        # A private name may only be imported by its own package (a package importing its private submodules).
        if name is not None and _private(name) and module != me and module != my_package:
            problems.append(f"{where}: imports the private name {name} from {module}")
    return problems


def test_no_private_names_cross_modules():
    problems = [p for path in _sources() for p in _violations(path)]
    assert not problems, "\n".join(problems)


def test_benchmarks_use_only_public_names():
    problems = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for module, name, line in _imports(path):
            if module.startswith("epjax") and (
                any(_private(p) for p in module.split(".")) or (name is not None and _private(name))
            ):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} {name or ''}")
        text = path.read_text(encoding="utf-8")
        # attribute access such as `text_lib._bucket` or `epjax._batching` (dunders like __version__ are fine)
        for match in re.finditer(r"\b(epjax|\w+_lib|text|kalman|pretrained)((?:\.\w+)*)\._(?!_)\w+", text):
            problems.append(f"{path.relative_to(ROOT)}: uses a private attribute {match.group(0)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # families and the engine never import experiments or the command line; experiments never the CLI
        ("engine/families", ("epjax.experiments", "epjax.cli")),
        ("experiments", ("epjax.cli",)),
    ],
)
def test_imports_point_downwards(layer, forbidden):
    problems = []
    for path in _sources():
        name = _module_name(path)
        in_experiments = name.startswith("epjax.experiments")
        in_cli = name.startswith("epjax.cli")
        if name in ("epjax", "epjax.__main__") or in_cli or (layer == "engine/families" and in_experiments):
            continue
        if layer == "experiments" and not in_experiments:
            continue
        for module, _, line in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {module}")
    assert not problems, "\n".join(problems)


def test_command_modules_import_only_the_shared_base():
    problems = []
    for path in sorted((PACKAGE / "cli").glob("_*.py")):
        if path.name in ("__init__.py", "__main__.py", "_base.py"):
            continue
        for module, name, line in _imports(path):
            target = f"{module}.{name}" if name and module == "epjax.cli" else module
            if target.startswith("epjax.cli") and target != "epjax.cli._base":
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not problems, "\n".join(problems)


def test_command_modules_are_small():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    # a command module: options, one experiment call, emit; the shared base holds what they all use
    too_long = {name: n for name, n in sizes.items() if n > (400 if name == "_base.py" else 300)}
    assert not too_long, f"command modules over 300 lines (the experiments layer should hold the work): {too_long}"


def test_the_checker_sees_a_violation():
    # The rules must be able to fail: a module of another package importing private things is reported.
    assert _private("_helper") and not _private("__init__")
    assert _module_name(PACKAGE / "kalman" / "__init__.py") == "epjax.kalman"
    assert _package_of(PACKAGE / "kalman" / "_exact.py") == "epjax.kalman"
    probe = PACKAGE / "cli" / "_probe.py"  # not written: the checker reads the text given
    text = "from epjax.kalman._exact import something\nfrom epjax.text import _private_thing\nfrom . import _base\n"
    problems = _violations(probe, text)
    assert len(problems) == 2 and "private module epjax.kalman._exact" in problems[0]
    assert "private name _private_thing" in problems[1]
