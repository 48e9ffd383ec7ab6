"""The webhook POST against real sockets on loopback: the connection goes to the vetted address
while the URL's host goes in `Host`, in SNI and in the certificate check; what is not HTTP is an
error, not an answer."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runtime.jobs.destinations import AllowList, parse
from runtime.jobs.transport import Answer, ProtocolError, post

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` (and 127.0.0.1) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Receiver:
    """Records each request's head, body and the SNI name it came with; answers `reply`."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.heads: list[list[str]] = []
        self.bodies: list[bytes] = []
        self.sni: list[str | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        length = next(int(line.split(":")[1]) for line in head if line.startswith("Content-Length"))
        self.heads.append(head)
        self.bodies.append(await reader.readexactly(length))
        writer.write(self.reply)
        await writer.drain()
        writer.close()

    async def serve(self, tls: ssl.SSLContext | None = None) -> asyncio.Server:
        if tls is not None:
            tls.sni_callback = lambda _obj, name, _ctx: self.sni.append(name)  # type: ignore[assignment,misc]
        return await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=tls)


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


def test_https_goes_to_the_vetted_address_under_the_urls_name(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "hooks.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    receiver = Receiver(b"HTTP/1.1 202 Accepted\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\nok")

    async def scenario() -> Answer:
        async with await receiver.serve(server_tls) as server:
            url = f"https://hooks.test:{port_of(server)}/in/hook?token=t"
            destination = parse(url, AllowList(["hooks.test"]))
            headers = {"webhook-id": "msg_1"}
            return await post(destination, ["127.0.0.1"], headers, b'{"a":1}', tls=client_tls)

    answer = asyncio.run(scenario())
    assert answer == Answer(202, 3.0)
    assert receiver.sni == ["hooks.test"]
    head = receiver.heads[0]
    assert head[0] == "POST /in/hook?token=t HTTP/1.1"
    assert any(line.startswith("Host: hooks.test:") for line in head)
    assert "webhook-id: msg_1" in head
    assert "Content-Type: application/json" in head
    assert receiver.bodies == [b'{"a":1}']


def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "other.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    receiver = Receiver(b"HTTP/1.1 204 No Content\r\n\r\n")

    async def scenario() -> None:
        async with await receiver.serve(server_tls) as server:
            url = f"https://hooks.test:{port_of(server)}/"
            destination = parse(url, AllowList(["hooks.test"]))
            await post(destination, ["127.0.0.1"], {}, b"{}", tls=client_tls)

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(scenario())
    assert receiver.bodies == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", Answer(204)),
        (b"HTTP/1.0 503 Busy\r\nretry-after: 120\r\n\r\n", Answer(503, 120.0)),
        (b"HTTP/1.1 301 Moved\r\nLocation: http://169.254.169.254/\r\n\r\n", Answer(301)),
    ],
)
def test_plain_http_answers(reply: bytes, expected: Answer) -> None:
    receiver = Receiver(reply)

    async def scenario() -> Answer:
        async with await receiver.serve() as server:
            destination = parse(f"http://127.0.0.1:{port_of(server)}", AllowList(["127.0.0.1"]))
            return await post(destination, ["127.0.0.1"], {}, b"{}")

    assert asyncio.run(scenario()) == expected  # a redirect is an answer, never followed
    assert receiver.heads[0][0] == "POST / HTTP/1.1"


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH_9.6\r\n", b"", b"HTTP/1.1 " + b"9" * 70_000])
def test_what_is_not_http_is_an_error(reply: bytes) -> None:
    receiver = Receiver(reply)

    async def scenario() -> None:
        async with await receiver.serve() as server:
            destination = parse(f"http://127.0.0.1:{port_of(server)}", AllowList(["127.0.0.1"]))
            await post(destination, ["127.0.0.1"], {}, b"{}")

    with pytest.raises(ProtocolError):
        asyncio.run(scenario())
