"""runtime.observe.logs: JSON for machines, text for people, each record once, and no query
string reaches a log line through a server's access log."""

from __future__ import annotations

import io
import json
import logging
import uuid

from uvicorn.logging import AccessFormatter

from runtime.observe.logs import (
    JsonFormatter,
    QueryRedaction,
    TextFormatter,
    configure_logging,
    formatter_for,
    redact_queries,
)
from runtime.settings import LogFormat


def logged(logger: logging.Logger, formatter: logging.Formatter) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return stream


def test_the_access_line_keeps_the_path_and_loses_the_query() -> None:
    logger = logging.getLogger(f"test.access.{uuid.uuid4().hex}")
    stream = logged(logger, AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    redact_queries(logger.name)
    redact_queries(logger.name)  # idempotent
    assert sum(isinstance(f, QueryRedaction) for f in logger.filters) == 1
    # uvicorn's call, as in its HTTP protocols.
    args = ("127.0.0.1:5000", "GET", "/generate?prompt=a+secret", "1.1", 200)
    logger.info('%s - "%s %s HTTP/%s" %d', *args)
    assert stream.getvalue() == '127.0.0.1:5000 - "GET /generate HTTP/1.1" 200 OK\n'


def test_other_arguments_and_mappings() -> None:
    logger = logging.getLogger(f"test.other.{uuid.uuid4().hex}")
    stream = logged(logger, logging.Formatter("%(message)s"))
    redact_queries(logger.name)
    logger.info("%s asked %s", "who?", "/ws?token=t")
    logger.info("%(path)s", {"path": "/x?y=z"})
    assert stream.getvalue().splitlines() == ["who? asked /ws", "/x"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "thaw.test", "levelno": logging.INFO, "levelname": "INFO", "msg": msg}
    )
    made.args = args or None
    made.__dict__.update(extra)
    return made


# uvicorn's own call: the message again, coloured, as an extra field for its formatter.
UVICORN = record(
    "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)",
    "http",
    "127.0.0.1",
    8000,
    color_message="Uvicorn running on \x1b[1m%s://%s:%d\x1b[0m (Press CTRL+C to quit)",
)


def test_json_lines_carry_the_fields_and_no_escape_codes() -> None:
    line = JsonFormatter().format(UVICORN)
    assert "\x1b" not in line
    assert "\\u001b" not in line
    entry = json.loads(line)
    assert entry["msg"] == "Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)"
    assert "color_message" not in entry
    coloured = json.loads(JsonFormatter().format(record("\x1b[31mred\x1b[0m", note="\x1b[1mx")))
    assert (coloured["msg"], coloured["note"]) == ("red", "x")


def test_text_is_uvicorns_line_with_the_fields_after_it() -> None:
    line = TextFormatter().format(
        record("model ready", slot="text-to-image", seconds=4.684, cut_off=[], note="a b")
    )
    assert line == 'INFO:     model ready  slot=text-to-image seconds=4.684 cut_off=[] note="a b"'
    warning = record("careful")
    warning.levelno, warning.levelname = logging.WARNING, "WARNING"
    assert TextFormatter().format(warning) == "WARNING:  careful"
    assert TextFormatter().format(UVICORN) == (
        "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)"
    )


def test_a_request_reads_as_uvicorns_access_line() -> None:
    made = record(
        "request", request_id="ab12", method="POST", route="/generate", status=200, seconds=0.1248
    )
    assert TextFormatter().format(made) == "INFO:     POST /generate 200 in 125 ms  request_id=ab12"
    quick = record("request", method="GET", route="/readyz", status=503, seconds=0.0008)
    assert TextFormatter().format(quick) == "INFO:     GET /readyz 503 in 0.8 ms"
    assert "GET /readyz \x1b[91m503\x1b[0m in" in TextFormatter(colour=True).format(quick)
    missing = record("request", method="GET", route="/jobs/{job_id}", status=404, seconds=0.002)
    assert "\x1b[31m404\x1b[0m" in TextFormatter(colour=True).format(missing)
    assert json.loads(JsonFormatter().format(made))["status"] == 200  # JSON keeps every field


def test_colours_only_for_text_at_a_terminal() -> None:
    coloured = TextFormatter(colour=True).format(UVICORN)
    assert coloured.startswith("\x1b[32mINFO\x1b[0m:     Uvicorn running on \x1b[1mhttp://")
    assert isinstance(formatter_for(LogFormat.AUTO, Terminal()), TextFormatter)
    assert isinstance(formatter_for(LogFormat.AUTO, io.StringIO()), JsonFormatter)
    assert isinstance(formatter_for(LogFormat.JSON, Terminal()), JsonFormatter)
    plain = formatter_for(LogFormat.TEXT, io.StringIO())
    assert isinstance(plain, TextFormatter)
    assert not plain.colour
    assert "\x1b" not in plain.format(record("\x1b[31mred\x1b[0m"))


def test_each_record_is_written_once_whatever_uvicorn_configured() -> None:
    stream = io.StringIO()
    access = logging.getLogger("uvicorn.access")
    saved = (logging.getLogger().handlers[:], logging.getLogger().level)
    own = logging.StreamHandler(io.StringIO())
    access.addHandler(own)  # as uvicorn's default log config does
    access.propagate = False
    try:
        configure_logging("info", LogFormat.JSON, stream)
        access.info("GET /")
        logging.getLogger("thaw.test").info("hello")
    finally:
        logging.getLogger().handlers[:], level = saved
        logging.getLogger().setLevel(level)
    written = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert written == ["GET /", "hello"]
    assert own not in access.handlers
