"""One HTTP/1.1 POST to an address that was checked, on asyncio streams.

Why not `urllib` or `http.client`: they resolve the host themselves, so the address checked
(`runtime.jobs.destinations.vetted`) and the address connected to could differ, which is what a
DNS-rebinding attack needs; and they block a thread for as long as a slow receiver likes. Here
the TCP connection goes to a vetted address while the URL's host goes in `Host` and, for https,
in SNI and the certificate check; the caller bounds the whole attempt (connect, TLS, request,
answer) with one deadline. Redirects are not followed: the Standard Webhooks specification
counts a 3xx as a failed delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from runtime.jobs.destinations import Destination

MAX_HEADER_LINES = 100
MAX_BODY_READ = 64 * 1024
"""A small answer body is read before closing (closing on unread data resets the connection);
a larger one is not waited for."""

USER_AGENT = "thaw-webhooks"


class ProtocolError(ConnectionError):
    """The receiver answered something that is not HTTP/1.x."""


@dataclass(frozen=True)
class Answer:
    """The receiver's answer: its status and, when it gave one, its `Retry-After` in seconds."""

    status: int
    retry_after_s: float | None = None


Post = Callable[[Destination, Sequence[str], Mapping[str, str], bytes], Awaitable[Answer]]
"""`(destination, vetted addresses, headers, body)` to the answer; raises `OSError`
(`ConnectionError`, `ssl.SSLError`, ...) or `EOFError` when no answer came."""


async def post(
    destination: Destination,
    addresses: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """POST `body` to `destination` over a connection to the first of `addresses` that
    accepts one; https is checked against the system's CAs unless `tls` says otherwise. The
    caller bounds the time."""
    reader, writer = await _connect(destination, addresses, tls)
    try:
        writer.write(_request(destination, headers, body))
        await writer.drain()
        return await _answer(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # made once: loading the CA store takes a while


async def _connect(
    destination: Destination, addresses: Sequence[str], tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    failure: OSError = OSError(f"no address to connect to for {destination.host}")
    for address in addresses:
        try:
            if destination.tls:
                return await asyncio.open_connection(
                    address, destination.port, ssl=tls or _tls(), server_hostname=destination.host
                )
            return await asyncio.open_connection(address, destination.port)
        except OSError as exc:
            failure = exc
    raise failure


def _request(destination: Destination, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [
        f"POST {destination.target} HTTP/1.1",
        f"Host: {destination.authority}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


async def _answer(reader: asyncio.StreamReader) -> Answer:
    status_line = await _line(reader)
    parts = status_line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
    status = int(parts[1])
    fields: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = await _line(reader)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    length = fields.get("content-length", "")
    if length.isdigit() and int(length) <= MAX_BODY_READ:
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readexactly(int(length))
    return Answer(status, retry_after(fields.get("retry-after")))


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than the stream's limit (64 KiB)
        raise ProtocolError("an answer line longer than 64 KiB") from None


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
