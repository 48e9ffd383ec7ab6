"""runtime.observe.logs: no query string reaches a log line through a server's access log."""

from __future__ import annotations

import io
import logging
import uuid

from uvicorn.logging import AccessFormatter

from runtime.observe.logs import QueryRedaction, redact_queries


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
