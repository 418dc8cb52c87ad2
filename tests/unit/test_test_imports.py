"""No test module imports another test module or a conftest: shared helpers live in
`tests/helpers.py` (the state store contract in `tests/state_contract.py`), shared fixtures in a
conftest. Importing a test module runs its module-level code twice under two names and ties one
tier's tests to another's; pytest loads conftests itself, under names of its own."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _forbidden(name: str) -> bool:
    last = name.rpartition(".")[2]
    return last.startswith("test_") or last == "conftest"


def offending_imports(root: Path = TESTS) -> list[str]:
    """`file:line imported` for every import of a test module or a conftest under `root`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                # `from tests.functions import test_orchestration` imports the module by its attribute name
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found += [f"{path.relative_to(root)}:{node.lineno} {name}" for name in names if _forbidden(name)]
    return found


def test_the_check_sees_each_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(
        "from tests.functions import test_orchestration\nfrom .test_b import x\nimport tests.unit.test_c\n"
        "from tests.conftest import y\nfrom .conftest import z\nfrom tests.helpers import cli\n"
        "import conftest_sftp\n",
        encoding="utf-8",
    )
    assert offending_imports(tmp_path) == [
        "test_a.py:1 tests.functions.test_orchestration",
        "test_a.py:2 .test_b",
        "test_a.py:3 tests.unit.test_c",
        "test_a.py:4 tests.conftest",
        "test_a.py:5 .conftest",
    ]


def test_no_test_module_imports_another_or_a_conftest() -> None:
    assert offending_imports() == []
