"""Log records on stderr, in the form their reader wants: JSON lines for a machine, text for a
person.

A log pipeline (CloudWatch, Cloud Logging, Loki, `kubectl logs` into a collector) parses one JSON
object per line; a person at a terminal reads one line per event, as uvicorn prints them. So the
format follows stderr: a terminal gets text, anything else (a pipe, a file, Lambda) gets JSON,
and `THAW_LOG_FORMAT` says which when the guess is wrong. Every record goes through the root
logger's single handler, so no line is written twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from runtime.settings import LogFormat

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# uvicorn passes the message again with ANSI colours as `extra={"color_message": ...}` for its own
# formatter; it is a rendering of the message, not a field.
_COLOR_MESSAGE = "color_message"
_DROPPED = {_COLOR_MESSAGE}

# An ANSI control sequence (CSI), as libraries put into messages meant for a terminal.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def _plain(text: str) -> str:
    return _ESCAPES.sub("", text) if "\x1b" in text else text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's extra fields, in the order they were given."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _plain(record.getMessage()),
        }
        for key, value in _fields(record).items():
            entry[key] = _plain(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = _plain(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


# uvicorn's level colours (uvicorn.logging.ColourizedFormatter).
_LEVEL_COLOURS = {
    logging.DEBUG: "36",
    logging.INFO: "32",
    logging.WARNING: "33",
    logging.ERROR: "31",
    logging.CRITICAL: "91",
}


class TextFormatter(logging.Formatter):
    """uvicorn's line, `INFO:     message`, then the record's fields as `key=value`.

    With `colour`, the level is coloured as uvicorn colours it, uvicorn's own records keep their
    coloured message, and the fields are dimmed; without, no escape code is written at all.
    """

    def __init__(self, *, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname
        prefix = f"{level}:" + " " * max(1, 9 - len(level))
        message = record.getMessage()
        extra = _fields(record)
        access = _access(extra, colour=self.colour)
        if access is not None:
            message = access
        fields = " ".join(f"{key}={_brief(value)}" for key, value in extra.items())
        if self.colour:
            colour = _LEVEL_COLOURS.get(record.levelno, "0")
            prefix = f"\x1b[{colour}m{level}\x1b[0m:" + " " * max(1, 9 - len(level))
            coloured = getattr(record, _COLOR_MESSAGE, None)
            if isinstance(coloured, str):
                with contextlib.suppress(TypeError, ValueError):  # then the plain message
                    message = coloured % record.args if record.args else coloured
            fields = f"\x1b[2m{fields}\x1b[0m" if fields else ""
        line = f"{prefix}{message}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line if self.colour else _plain(line)


# A request's line (thaw.http's `request` record) reads as uvicorn's access line does:
# `POST /generate 200 in 125 ms`, the status coloured by its class at a terminal.
_ACCESS = ("method", "route", "status")
_STATUS_COLOURS = {1: "97", 2: "32", 3: "33", 4: "31", 5: "91"}


def _access(fields: dict[str, Any], *, colour: bool) -> str | None:
    """The access line of a record that has a method, a route and a status, which it takes out
    of `fields` (with `seconds`); None for any other record."""
    if not all(key in fields for key in _ACCESS):
        return None
    method, route, status = (fields.pop(key) for key in _ACCESS)
    shown = str(status)
    if colour and isinstance(status, int):
        shown = f"\x1b[{_STATUS_COLOURS.get(status // 100, '0')}m{status}\x1b[0m"
    line = f"{method} {route} {shown}"
    seconds = fields.pop("seconds", None)
    if isinstance(seconds, (int, float)):
        ms = seconds * 1000
        line += f" in {ms:.1f} ms" if ms < 10 else f" in {ms:,.0f} ms"
    return line


def _brief(value: object) -> str:
    """A field's value as a person reads it: a bare word or number, else JSON (quoted text)."""
    if isinstance(value, str):
        if value and not any(c.isspace() or c in '="' for c in value):
            return value
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict, int)):
        return json.dumps(value, default=str)
    return _brief(str(value))


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def formatter_for(log_format: LogFormat, stream: TextIO) -> logging.Formatter:
    """The formatter `log_format` asks for on `stream`: `auto` is text at a terminal, else JSON;
    colours only for text at a terminal."""
    terminal = is_terminal(stream)
    if log_format is LogFormat.JSON or (log_format is LogFormat.AUTO and not terminal):
        return JsonFormatter()
    return TextFormatter(colour=terminal)


def configure_logging(
    level: str = "info", log_format: LogFormat = LogFormat.AUTO, stream: TextIO | None = None
) -> None:
    """Send every log record to stderr (or `stream`) through one handler on the root logger.

    Loggers that a server configured with handlers of their own (uvicorn's default log config puts
    text handlers on `uvicorn` and `uvicorn.access`) lose them and propagate to the root, so each
    record is written once, in one format.
    """
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter_for(log_format, out))
    handler.addFilter(PromptRedaction())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python's warnings (a library's deprecation, torch's UserWarning) are records too: left to
    # `warnings.showwarning` they reach stderr as raw text lines, even in JSON mode.
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    if not any(isinstance(f, _TrailingNewline) for f in warnings_logger.filters):
        warnings_logger.addFilter(_TrailingNewline())
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class _TrailingNewline(logging.Filter):
    """A captured warning's text ends with a newline (`warnings.formatwarning`'s): drop it, so a
    text line is not followed by an empty one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = record.msg.rstrip()
        return True


# diffusers' pipelines log the part of a prompt their text encoder cut off, for every prompt
# longer than it takes: "The following part of your input was truncated because CLIP can only
# handle sequences up to 77 tokens: [...]". The words before the colon say what happened.
_TRUNCATED = re.compile(
    r"(The following part of your input was truncated because .*? tokens):.*", re.DOTALL
)


class PromptRedaction(logging.Filter):
    """Cut the prompt's text out of a library's "your input was truncated" record: no prompt
    reaches a log line unless THAW_LOG_PROMPTS logs it on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args or not isinstance(record.msg, str) or "was truncated" not in record.msg:
            return True
        redacted = _TRUNCATED.sub(r"\1 (the text cut off is not logged)", record.msg)
        if redacted != record.msg:
            record.msg = redacted
        return True


class QueryRedaction(logging.Filter):
    """Cut the query string off every request path among a record's arguments.

    A server's access log writes the request target with its query (uvicorn: `"GET
    /generate?prompt=... HTTP/1.1" 200`), and a query may carry a prompt or a token, which
    no log line may hold. The path, method and status stay. Only arguments are rewritten, so
    the record's format and each formatter's reading of the arguments keep working.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _without_query(arg) for key, arg in record.args.items()}
        return True


def _without_query(value: object) -> object:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.partition("?")[0]
    return value


def redact_queries(*logger_names: str) -> None:
    """Put a `QueryRedaction` on each named logger, once however often this is called."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryRedaction) for f in logger.filters):
            logger.addFilter(QueryRedaction())
