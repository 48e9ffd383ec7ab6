"""The rooms of `runtime/` stay rooms: every import points the allowed way.

Each module of `runtime/` belongs to a room (its subpackage, or `base` for the top-level
modules that everything may use); a room may import only the rooms listed for it. Nothing in
`runtime/` imports `handler/`, a web framework or a model library at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"

BASE = {"base"}
ALLOWED: dict[str, set[str]] = {
    "base": BASE,
    "observe": BASE | {"observe"},
    "weights": BASE | {"observe", "weights"},
    "lifecycle": BASE | {"observe", "lifecycle"},
    "worker": BASE | {"observe"},
    "aws": BASE | {"observe", "lifecycle", "aws"},
    "jobs": BASE | {"observe", "lifecycle", "jobs"},
    "cli": BASE | {"observe", "weights"},
}
ROOM_OF_TOP_MODULE = {"worker": "worker", "__main__": "cli"}
FOREIGN = ("handler", "fastapi", "starlette", "uvicorn", "mangum", "torch", "diffusers")


def room(module: str) -> str:
    """`runtime.lifecycle.slot` -> lifecycle; `runtime.settings` -> base."""
    parts = module.split(".")
    if len(parts) >= 3:
        return parts[1]
    if len(parts) == 2 and (RUNTIME / parts[1]).is_dir():
        return parts[1]
    return ROOM_OF_TOP_MODULE.get(parts[-1], "base")


def imports(path: Path, module: str = "runtime.x") -> list[tuple[int, str]]:
    """Imports that run when the module is imported: at module level, inside `try`, `with` and
    `if` blocks too, but not under `if TYPE_CHECKING:` nor inside functions or classes.
    Relative imports are resolved against `module`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found: list[tuple[int, str]] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = package[: len(package) - (node.level - 1)]
                    base = ".".join(parent + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base == "runtime" or (node.level and node.module is None):
                    found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
                else:
                    found.append((node.lineno, base))
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(RUNTIME.rglob("*.py")):
        relative = path.relative_to(RUNTIME.parent).with_suffix("")
        found.append((".".join(relative.parts), path))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_runtime_imports_point_the_allowed_way(module: str, path: Path) -> None:
    if module == "runtime" or module == "runtime.__init__":
        return  # the package's lazy re-exports
    own = room(module.removesuffix(".__init__"))
    wrong = []
    for line, target in imports(path, module.removesuffix(".__init__")):
        top = target.split(".")[0]
        if top in FOREIGN:
            wrong.append(f"line {line}: {target} (runtime/ imports no {top})")
        elif top == "runtime" and room(target) not in ALLOWED[own]:
            wrong.append(f"line {line}: {target} ({own} may import {sorted(ALLOWED[own])})")
    assert not wrong, f"{module} imports against the rooms' direction:\n" + "\n".join(wrong)


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "slot.py"
    bad.write_text(
        "from runtime.aws.adapter import LambdaAdapter\n"
        "try:\n    import fastapi\nexcept ImportError:\n    pass\n"
        "from ..aws import events\n"
        "if TYPE_CHECKING:\n    from runtime.aws import warmup\n"
    )
    targets = [target for _, target in imports(bad, "runtime.lifecycle.slot")]
    assert targets == ["runtime.aws.adapter", "fastapi", "runtime.aws"]
    assert room("runtime.lifecycle.slot") == "lifecycle"
    assert [room(t) for t in targets if t.startswith("runtime")] == ["aws", "aws"]
    assert "aws" not in ALLOWED["lifecycle"]
    assert "fastapi" in FOREIGN
