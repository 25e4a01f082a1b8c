"""The package's shape: the command line sits on top, nothing below it imports it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facevox"


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module a source file under `root` (the facevox folder) imports, relative imports resolved,
    `from a import b` counted as both a and a.b."""
    package = ["facevox", *path.relative_to(root).parent.parts]
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    return modules


def cli_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    return sorted(m for m in imported_modules(path, root) if m == "facevox.cli" or m.startswith("facevox.cli."))


def test_the_scan_sees_each_way_of_importing_the_command_line(tmp_path):
    (tmp_path / "batch").mkdir()
    ways = ["import facevox.cli", "from facevox.cli import main", "from facevox import cli", "from .. import cli",
            "from ..cli import app", "def f():\n    from facevox.cli import collect_inputs"]
    for n, text in enumerate(ways):
        source = tmp_path / "batch" / f"m{n}.py"
        source.write_text(text + "\n")
        assert cli_imports(source, tmp_path), text
    fine = tmp_path / "batch" / "fine.py"
    fine.write_text("from facevox.files import collect_inputs\nfrom . import cli_helpers\nimport facevox.client\n")
    assert cli_imports(fine, tmp_path) == []


def test_no_module_of_the_package_imports_the_command_line():
    offenders = {str(path.relative_to(PACKAGE)): cli_imports(path) for path in PACKAGE.rglob("*.py") if path.name != "cli.py"}
    assert {path: modules for path, modules in offenders.items() if modules} == {}
