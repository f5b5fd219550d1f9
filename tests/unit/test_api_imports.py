"""The API has no import circle: nothing under service/api/views imports service.api.app.

The views once imported `runtime()` from app.py, which imports the views to register them
(a 7-file circle). They reach the runtime through service/api/deps.py now; this keeps it so,
and keeps the use cases (service/usecases.py) free of Flask: they know nothing of HTTP.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SERVICE.parent).with_suffix("").parts)


def _api_graph() -> dict[str, set[str]]:
    """Module -> the service.api modules it imports (packages count as their __init__)."""
    files = {_module(p).removesuffix(".__init__"): p for p in (SERVICE / "api").rglob("*.py")}
    return {name: _imports(path) & files.keys() for name, path in files.items()}


def test_no_view_imports_the_app() -> None:
    views = sorted((SERVICE / "api" / "views").glob("*.py"))
    assert views
    for view in views:
        assert "service.api.app" not in _imports(view), f"{view.name} imports service.api.app"


def test_the_api_package_has_no_import_cycle() -> None:
    graph = _api_graph()
    graph.pop("service.api", None)  # the package re-exports create_app; nothing imports it back
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        visiting.append(name)
        for target in sorted(graph.get(name, set())):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_use_cases_know_nothing_of_http() -> None:
    imported = _imports(SERVICE / "usecases.py")
    assert not {m for m in imported if m.split(".")[0] in ("flask", "flask_smorest", "werkzeug")}
    assert not {m for m in imported if m.startswith("service.api")}
