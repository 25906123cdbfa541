"""The pure core stays pure: no trio, no I/O, no clock reads (design.md, style.md practice 1).

import-linter checks the imports in `make lint`; this test also catches what an import contract
cannot see: calls such as ``time.time()``, ``datetime.now()``, ``open(...)``, ``os.environ``, and
submodules of the standard library such as ``urllib.request``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scitokens_batch"
PURE = sorted((PACKAGE / "tokens").glob("*.py")) + sorted((PACKAGE / "protocol").glob("*.py"))
FORBIDDEN_MODULES = {
    "trio",
    "time",
    "socket",
    "subprocess",
    "sqlite3",
    "httpx",
    "hypercorn",
    "structlog",
    "asyncio",
}
FORBIDDEN_SUBMODULES = {"urllib.request", "http.client"}
FORBIDDEN_ATTRIBUTES = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("os", "environ"),
    ("os", "getenv"),
}
FORBIDDEN_CALLS = {"open", "print", "input"}


def _forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN_MODULES or any(
        module == m or module.startswith(m + ".") for m in FORBIDDEN_SUBMODULES
    )


def _problems(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [f"from {node.module} import ..."] if _forbidden(node.module) else []
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            found += [f"{pair[0]}.{pair[1]}"] if pair in FORBIDDEN_ATTRIBUTES else []
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            found += [f"{node.func.id}(...)"] if node.func.id in FORBIDDEN_CALLS else []
    return found


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module(path: Path) -> None:
    """A token/protocol module imports no I/O or clock module and calls no I/O or clock function."""
    assert _problems(ast.parse(path.read_text(), filename=str(path))) == []


def test_detector_finds_violations() -> None:
    """The detector itself flags each kind of violation (so the test above can fail)."""
    code = (
        "import trio\nfrom urllib.request import urlopen\nimport time\nx = os.environ\nopen('f')\n"
    )
    assert _problems(ast.parse(code)) == [
        "import trio",
        "from urllib.request import ...",
        "import time",
        "os.environ",
        "open(...)",
    ]


def test_pure_modules_found() -> None:
    """The purity test really looks at the token core (guards against an empty glob)."""
    names = {p.name for p in PURE}
    assert {"_codec.py", "_verifier.py", "_scopes.py", "_discovery.py", "_jobs.py"} <= names
