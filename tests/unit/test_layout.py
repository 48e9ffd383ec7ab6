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


def imports(path: Path) -> list[tuple[int, str]]:
    """Module-level imports (not those under `if TYPE_CHECKING:` or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "runtime":
                found += [(node.lineno, f"runtime.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
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
    for line, target in imports(path):
        top = target.split(".")[0]
        if top in FOREIGN:
            wrong.append(f"line {line}: {target} (runtime/ imports no {top})")
        elif top == "runtime" and room(target) not in ALLOWED[own]:
            wrong.append(f"line {line}: {target} ({own} may import {sorted(ALLOWED[own])})")
    assert not wrong, f"{module} imports against the rooms' direction:\n" + "\n".join(wrong)


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "slot.py"
    bad.write_text("from runtime.aws.adapter import LambdaAdapter\nimport fastapi\n")
    targets = [target for _, target in imports(bad)]
    assert room("runtime.lifecycle.slot") == "lifecycle"
    assert [room(t) for t in targets if t.startswith("runtime")] == ["aws"]
    assert "aws" not in ALLOWED["lifecycle"]
    assert "fastapi" in FOREIGN
