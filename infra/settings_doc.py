"""docs/configuration.md, generated from the settings code so that it cannot drift from it.

    python -m infra.settings_doc            # print the page
    python -m infra.settings_doc --write    # write docs/configuration.md
    python -m infra.settings_doc --check    # exit 1 when the page is not what the code says

What each setting is comes from the code that reads it: the settings dataclasses that
`handler.config.Config` holds (`runtime.settings.Settings`, the function's and the server's own,
and any nested in them). For each field, its `from_env` says which `THAW_*` variable fills it
(followed through local variables and the module's helper functions), the parsed defaults give
its default, the reader call its bounds, the field's docstring its meaning, and an `Enum`
field's members' docstrings its values. A variable read that maps to no field, or a field with
no docstring, stops the generator with a message saying what to add where.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from handler.config import Config
from runtime.settings import PREFIX

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
COMMAND = "python -m infra.settings_doc --write"

READERS = {"string", "optional", "number", "integer", "flag", "choice", "raw"}
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")

# Variables that are not thaw's own but change what thaw does; the settings read them beside the
# `THAW_*` ones. A new one read by the settings code must be described here (the generator says so).
PLATFORM_VARIABLES = {
    "AWS_LAMBDA_FUNCTION_NAME": "Set by Lambda. When present thaw runs as a Lambda function: "
    "the cache defaults to `/tmp/thaw-cache` (the only writable place) and jobs need a shared "
    "store.",
    "HF_HUB_CACHE": "The Hugging Face hub cache that a model id in `THAW_MODEL` is read from "
    "(thaw never downloads from the hub).",
    "HUGGINGFACE_HUB_CACHE": "The legacy name of `HF_HUB_CACHE`, read when that is unset.",
    "HF_HOME": "Where the hub cache is when `HF_HUB_CACHE` is unset (`$HF_HOME/hub`).",
    "XDG_CACHE_HOME": "Where the default cache folders are when set (`$XDG_CACHE_HOME/thaw`, "
    "`$XDG_CACHE_HOME/huggingface/hub`).",
    "HOME": "The default cache folders are under `~/.cache`.",
}

INTRO = f"""\
# Configuration

thaw reads its settings once, at start, from `{PREFIX}*` environment variables. A bad value
stops the process with a message that names the variable; an empty value counts as unset.
Switches take `1`/`0`, `true`/`false`, `yes`/`no` or `on`/`off`; durations are in the unit
their name ends with (`_S` seconds, `_MS` milliseconds).

```sh
{PREFIX}MODEL=/models/sd15 {PREFIX}DEVICE=cuda {PREFIX}MAX_BATCH=4 make serve
```

This page is generated from the settings code, and a test fails when the two differ: to
change a description, edit the docstring under the field in the file that each section names,
then run `{COMMAND}`.
"""


class UndocumentedSetting(Exception):
    """The settings code reads something this page cannot describe; the message says what."""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    default: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class Section:
    title: str
    source: str
    intro: str
    entries: tuple[Entry, ...]


# --- reading the source -------------------------------------------------------------------------


@cache
def _module_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _class_node(cls: type) -> tuple[ast.ClassDef, ast.Module, Path]:
    path = Path(inspect.getfile(cls))
    tree = _module_tree(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node, tree, path
    raise UndocumentedSetting(f"{cls.__qualname__} is not defined at the top of {path}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (a string right after it)."""
    node, _, _ = _class_node(cls)
    docs: dict[str, str] = {}
    body = node.body
    for statement, following in zip(body, [*body[1:], None], strict=True):
        targets: list[ast.expr]
        if isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        elif isinstance(statement, ast.Assign):  # an Enum's member
            targets = statement.targets
        else:
            continue
        if (
            len(targets) == 1
            and isinstance(targets[0], ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[targets[0].id] = inspect.cleandoc(following.value.value)
    return docs


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _constant(node: ast.expr, names: Mapping[str, Any]) -> Any:
    """The value of a literal, a module's numeric constant, or arithmetic on them
    (`6 * 1024 * 1024`, `MAX_SIDE_CEILING`); None for anything else."""
    allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Load)
    numbers = {
        key: value
        for key, value in names.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    for part in ast.walk(node):
        if isinstance(part, ast.Name) and part.id in numbers:
            continue
        if not isinstance(part, allowed):
            return None
    return eval(compile(ast.Expression(node), "<setting>", "eval"), {"__builtins__": {}}, numbers)


@dataclasses.dataclass
class _Reads:
    """What one expression of `from_env` reads: variable names, and each name's reader call."""

    names: list[str] = dataclasses.field(default_factory=list)
    calls: dict[str, ast.Call] = dataclasses.field(default_factory=dict)

    def add(self, name: str, call: ast.Call | None = None) -> None:
        if name not in self.names:
            self.names.append(name)
        if call is not None and name not in self.calls:
            self.calls[name] = call


def _reads(
    expr: ast.AST,
    local: Mapping[str, ast.expr],
    functions: Mapping[str, ast.FunctionDef],
    found: _Reads,
    seen: set[int],
) -> None:
    """The `THAW_*` names an expression reads: through an `EnvReader` call with a literal name,
    a local variable assigned in the same function, or a module function it calls (and the
    literal names it passes that function)."""
    if id(expr) in seen:
        return
    seen.add(id(expr))
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and node.id in local:
            _reads(local[node.id], local, functions, found, seen)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        literal = [
            arg.value
            for arg in node.args
            if isinstance(arg, ast.Constant)
            and isinstance(arg.value, str)
            and ENV_NAME.fullmatch(arg.value)
        ]
        if isinstance(func, ast.Attribute) and func.attr in READERS and literal:
            found.add(literal[0], node if func.attr != "raw" else None)
        elif isinstance(func, ast.Name) and func.id in functions:
            for name in literal:
                found.add(name, node)  # a reader of the module's own, with its bounds
            helper = functions[func.id]
            _reads(helper, _assignments(helper), functions, found, seen)


def _assignments(function: ast.FunctionDef) -> dict[str, ast.expr]:
    local: dict[str, ast.expr] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    local[target.id] = node.value
        elif isinstance(node, ast.NamedExpr):
            local[node.target.id] = node.value
    return local


def field_reads(cls: type) -> dict[str, _Reads]:
    """For each keyword of the `cls(...)` call in `cls.from_env`, what it reads."""
    node, tree, path = _class_node(cls)
    functions = _functions(tree)
    from_env = next(
        (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "from_env"), None
    )
    if from_env is None:
        raise UndocumentedSetting(f"{cls.__name__} in {path} has no from_env")
    local = _assignments(from_env)
    built = [
        n
        for n in ast.walk(from_env)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "cls"
    ]
    reads: dict[str, _Reads] = {}
    for call in built:
        for keyword in call.keywords:
            if keyword.arg is not None:
                found = _Reads()
                _reads(keyword.value, local, functions, found, set())
                reads[keyword.arg] = found
    return reads


def names_read_in(path: Path) -> set[str]:
    """Every literal variable name given to an `EnvReader` call or passed beside one (`env`) to
    a function, anywhere in a module: what a page of its settings must at least hold."""
    names: set[str] = set()
    for node in ast.walk(_module_tree(path)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        beside_env = any(isinstance(arg, ast.Name) and arg.id == "env" for arg in node.args)
        if (isinstance(func, ast.Attribute) and func.attr in READERS) or beside_env:
            names.update(
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and ENV_NAME.fullmatch(arg.value)
            )
    return names


# --- rendering ----------------------------------------------------------------------------------


def render_value(value: Any) -> str:
    if value is None or value in ((), "", b""):
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() else str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return ", ".join(render_value(item) for item in value)
    if isinstance(value, bytes):
        return "(set)"
    return f"`{value}`"


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", ")", ":")) else text + "."


def _bounds(call: ast.Call | None, names: Mapping[str, Any]) -> str:
    """The bounds given to the call that reads a variable (`minimum=`, `maximum=`)."""
    if call is None:
        return ""
    given = {kw.arg: _constant(kw.value, names) for kw in call.keywords if kw.arg}
    low, high = given.get("minimum"), given.get("maximum")
    if low is None and high is None:
        return ""

    def show(number: object) -> str:
        return f"{number:,g}" if isinstance(number, float) else f"{number:,}"

    if low is not None and high is not None:
        return f" From {show(low)} to {show(high)}."
    if low is not None:
        return f" At least {show(low)}."
    return f" At most {show(high)}."


def _choices(annotation: Any) -> str:
    members = [
        cls
        for cls in _annotation_types(annotation)
        if isinstance(cls, type) and issubclass(cls, enum.Enum)
    ]
    if not members:
        return ""
    kinds = members[0]
    docs = field_docs(kinds) if _has_source(kinds) else {}
    parts = []
    for member in kinds:
        doc = docs.get(member.name)
        parts.append(f"`{member.value}`" + (f": {_sentence(doc)}" if doc else ""))
    return " " + " ".join(parts)


def _has_source(cls: type) -> bool:
    try:
        _class_node(cls)
    except (UndocumentedSetting, TypeError, OSError):
        return False
    return True


def _annotation_types(annotation: Any) -> Iterator[Any]:
    yield annotation
    yield from getattr(annotation, "__args__", ())


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


# --- the page -----------------------------------------------------------------------------------


class Recording(Mapping[str, str]):
    """An environment that remembers every name asked of it, and which settings class asked
    (the nearest `from_env` classmethod on the stack), so a variable read in a loop or a helper
    is still found and placed."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: dict[str, type | None] = {}

    def __getitem__(self, key: str) -> str:
        self.asked.setdefault(key, _reading_class())
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _reading_class() -> type | None:
    frame = inspect.currentframe()
    while frame is not None:
        reader = frame.f_locals.get("cls")
        if frame.f_code.co_name == "from_env" and isinstance(reader, type):
            return reader
        frame = frame.f_back
    return None


def sections() -> list[Section]:
    """Every settings dataclass under `Config`, as one section each, with defaults as parsed from
    an environment holding only `HOME=~` (so the cache folders read `~/.cache/...`)."""
    environ = Recording({"HOME": "~"})
    config = Config.from_env(environ)
    read_by: dict[type, list[str]] = {}
    for name, reader in environ.asked.items():
        if name.startswith(PREFIX) and reader is not None:
            read_by.setdefault(reader, []).append(name.removeprefix(PREFIX))
    found: list[Section] = []
    for field in dataclasses.fields(config):
        _walk(getattr(config, field.name), field.name, read_by, found)
    documented = documented_names(found)
    missing = sorted(
        name
        for name in environ.asked
        if (name.startswith(PREFIX) and name not in documented)
        or (not name.startswith(PREFIX) and name not in PLATFORM_VARIABLES)
    )
    if missing:
        raise UndocumentedSetting(
            f"the settings read {missing}, which this page cannot place: a {PREFIX}* variable "
            "must fill a field of a settings class in its from_env; another variable needs a "
            "line in infra/settings_doc.py's PLATFORM_VARIABLES"
        )
    return found


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _walk(
    settings: Any, name: str, read_by: Mapping[type, Sequence[str]], found: list[Section]
) -> None:
    cls = type(settings)
    node, _, path = _class_node(cls)
    where = path.relative_to(ROOT)
    docs = field_docs(cls)
    hints = _hints(cls)
    fields = {field.name: getattr(settings, field.name) for field in dataclasses.fields(cls)}
    nested = [(value, key) for key, value in fields.items() if dataclasses.is_dataclass(value)]
    reads = field_reads(cls)
    # What this class reads when it runs, and what its source reads (a read only some values
    # reach), each placed on the field it fills.
    names = list(read_by.get(cls, ()))
    names += [n for read in reads.values() for n in read.names if n not in names]
    placed: dict[str, str] = {}
    for variable in names:
        filled = _field_of(variable, fields, reads)
        if filled is None:
            raise UndocumentedSetting(
                f"{cls.__name__}.from_env in {where} reads {PREFIX}{variable}, but no field takes "
                "its value: name the field after the variable"
            )
        placed.setdefault(filled, variable)
    entries: list[Entry] = []
    for field, value in fields.items():
        env_name = placed.get(field)
        if env_name is None or dataclasses.is_dataclass(value):
            continue  # not from a THAW_* variable (derived from the platform's), or a section
        doc = docs.get(field)
        if not doc:
            raise UndocumentedSetting(
                f"{PREFIX}{env_name} ({cls.__name__}.{field}) has no description: write a "
                f"docstring under the field in {where}, then run `{COMMAND}`"
            )
        read = reads.get(field)
        call = None if read is None else read.calls.get(env_name)
        constants = vars(sys.modules[cls.__module__])
        meaning = _sentence(doc) + _choices(hints.get(field)) + _bounds(call, constants)
        entries.append(Entry(f"{PREFIX}{env_name}", render_value(value), meaning))
    found.append(Section(_title(name), str(where), _first_sentence(node), tuple(entries)))
    for value, child in nested:
        _walk(value, child, read_by, found)


def _first_sentence(node: ast.ClassDef) -> str:
    text = " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


def _field_of(variable: str, fields: Mapping[str, Any], reads: Mapping[str, _Reads]) -> str | None:
    """The field a variable fills: the one named after it (`MAX_STEPS` -> `max_steps`, or a
    suffix: `WEBHOOK_TIMEOUT_S` -> `timeout_s` in the webhook settings), else the only field
    whose expression in `from_env` reads it."""
    lowered = variable.lower()
    if lowered in fields:
        return lowered
    suffixed = [field for field in fields if lowered.endswith("_" + field)]
    if len(suffixed) == 1:
        return suffixed[0]
    readers = [field for field, read in reads.items() if variable in read.names]
    return readers[0] if len(readers) == 1 else None


def _hints(cls: type) -> dict[str, Any]:
    import typing

    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, vars(module))


def documented_names(found: Sequence[Section]) -> set[str]:
    return {entry.name for section in found for entry in section.entries}


def render(found: Sequence[Section]) -> str:
    out = [INTRO]
    for section in found:
        out.append(f"## {section.title}\n")
        if section.intro:
            out.append(f"{section.intro} (`{section.source}`)\n")
        else:
            out.append(f"(`{section.source}`)\n")
        out.append("| variable | default | meaning |\n|---|---|---|")
        for entry in section.entries:
            out.append(f"| `{entry.name}` | {_escape(entry.default)} | {_escape(entry.meaning)} |")
        out.append("")
    out.append("## Read from the platform\n")
    out.append("| variable | meaning |\n|---|---|")
    for name, meaning in PLATFORM_VARIABLES.items():
        out.append(f"| `{name}` | {meaning} |")
    return "\n".join(out) + "\n"


def page() -> str:
    return render(sections())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.settings_doc", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    mode.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    try:
        text = page()
    except UndocumentedSetting as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.write:
        PAGE.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
