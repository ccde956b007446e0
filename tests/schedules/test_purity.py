"""The engine stays pure: stdlib and its own package only, so it runs without the server stack."""

import ast
import sys
from pathlib import Path

import pytest

import service.schedules

ENGINE_DIR = Path(service.schedules.__file__).parent
FORBIDDEN = {
    "torch",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "pydantic",
    "pydantic_settings",
    "httpx",
    "alembic",
    "psycopg",
    "numpy",
}
ENGINE_MODULES = sorted(ENGINE_DIR.glob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Absolute module names a file imports; relative imports count as the engine's own."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("service.schedules" if node.level else node.module or "")
    return names


def test_the_engine_has_modules_to_check() -> None:
    assert {"base.py", "registry.py", "decay.py", "composite.py"} <= {
        path.name for path in ENGINE_MODULES
    }


@pytest.mark.parametrize("path", ENGINE_MODULES, ids=lambda path: path.name)
def test_engine_module_imports_only_stdlib_and_the_engine(path: Path) -> None:
    for module in imported_modules(path):
        top_level = module.split(".")[0]
        assert top_level not in FORBIDDEN, f"{path.name} imports {module}"
        own = module == "service.schedules" or module.startswith("service.schedules.")
        assert own or top_level in sys.stdlib_module_names, f"{path.name} imports {module}"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nfrom service.db import engine\nimport torch.optim as optim\n")
    assert imported_modules(sample) == ["json", "service.db", "torch.optim"]
