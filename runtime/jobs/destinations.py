"""Where a webhook may go: an http(s) URL whose host the allow-list names, never a link-local
address.

A webhook URL comes from a client, so calling it is server-side request forgery waiting to
happen: the metadata service of every cloud (169.254.169.254, fe80::/10) hands out credentials
to whoever asks from inside. So a URL is checked twice. At submission: the scheme, the host
against `THAW_WEBHOOK_HOSTS`, and the addresses the host has then (a 422 for the client). At
every delivery attempt: the addresses resolved for that attempt, which are the only addresses
the attempt connects to (`runtime.jobs.transport`), so a name that pointed somewhere public at
submission and at the metadata service later (DNS rebinding) is refused then.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from runtime.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix: its addresses carry an IPv4 address a gateway connects to."""
METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "fd00:ec2::254",  # AWS's instance metadata service over IPv6 (Nitro): a private address
        "100.100.100.200",  # Alibaba Cloud's metadata service: a shared (CGNAT) address
    )
)
"""Cloud metadata services outside the link-local ranges: never called, like those."""

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port)` to the addresses a connection may use."""


class WebhookRefused(InvalidRequest):
    """A webhook URL thaw will not call; the message says why."""

    def __init__(self, message: str, *, field: str = "webhook") -> None:
        super().__init__(message, field=field)


class Reach(Enum):
    """How a host got through the allow-list, which decides the addresses it may have."""

    LISTED = "listed"
    """An entry names the host (or its domain, or a network holding its address): any address
    but a link-local one, loopback and private ones included."""

    PUBLIC = "public"
    """Only `*` lets it through: every address must be public."""


@dataclass(frozen=True)
class Destination:
    """A webhook URL that passed the checks that need no network."""

    url: str
    scheme: str
    host: str
    port: int
    target: str
    reach: Reach

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The `Host` header: the host (bracketed if IPv6) and a port that is not the
        scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def shown(self) -> str:
        """The URL without its query, for logs (a query may carry the receiver's token)."""
        return f"{self.scheme}://{self.authority}{self.target.split('?', 1)[0]}"


class AllowList:
    """The hosts of `THAW_WEBHOOK_HOSTS` (entries as `runtime.settings.WebhookSettings`
    describes and checks them)."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.names: set[str] = set()
        self.domains: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.anything = False
        for entry in entries:
            if entry == "*":
                self.anything = True
            elif entry.startswith("*."):
                self.domains.append(entry[2:].rstrip("."))
            elif (network := _network(entry)) is not None:
                self.networks.append(network)
            else:
                self.names.add(entry.rstrip("."))

    def reach(self, host: str) -> Reach | None:
        """How `host` (lower case, no brackets) is allowed, or None when it is not."""
        address = _address(host)
        if address is not None:
            if any(address in network for network in self.networks):
                return Reach.LISTED
        else:
            name = host.rstrip(".")
            if name in self.names or any(name.endswith("." + d) for d in self.domains):
                return Reach.LISTED
        return Reach.PUBLIC if self.anything else None


def parse(url: str, allowed: AllowList) -> Destination:
    """Check a webhook URL without touching the network; raises `WebhookRefused`."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or any(char <= " " or char == "\x7f" for char in url):
        raise WebhookRefused(
            "the webhook URL may hold no spaces, control or non-ASCII characters "
            "(percent-encode them; write an international domain name in its xn-- form)"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(f"a webhook URL must be http or https, not {scheme or 'nothing'!r}")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("a webhook URL may not carry credentials (user:password@)")
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookRefused("the webhook URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("the webhook URL's port is not a number from 1 to 65535") from None
    address = _address(host)
    if address is not None and (reason := _never(address)) is not None:
        raise WebhookRefused(f"a webhook may not go to {host}: {reason}")
    reach = allowed.reach(host)
    if reach is None:
        raise WebhookRefused(f"{host} is not in the allowed hosts for webhooks")
    if address is not None and reach is Reach.PUBLIC and not _public(address):
        raise WebhookRefused(f"a webhook may not go to {host}: not a public address")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(url, scheme, host, port, target, reach)


def refusal(address: str, reach: Reach) -> str | None:
    """Why a connection to `address` is not allowed for a host of this reach; None if it is."""
    parsed = _address(address)
    if parsed is None:
        return "not an IP address"
    reason = _never(parsed)
    if reason is None and reach is Reach.PUBLIC and not _public(parsed):
        reason = "not a public address"
    return reason


async def vetted(destination: Destination, resolve: Resolver) -> list[str]:
    """The addresses `destination` may be reached at now. Raises `WebhookRefused` when any
    address its host resolves to is not allowed (a name that also points at a forbidden address
    is not trusted with the others), `OSError` when it does not resolve."""
    addresses = await resolve(destination.host, destination.port)
    if not addresses:
        raise OSError(f"{destination.host} has no address")
    for address in addresses:
        reason = refusal(address, destination.reach)
        if reason is not None:
            raise WebhookRefused(f"{destination.host} resolves to {address}: {reason}")
    return addresses


_RESOLVERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="thaw-webhook-dns")
"""`getaddrinfo` blocks, for as long as the system resolver's own timeouts: lookups get threads
of their own, so a slow DNS server holds these, not the loop's default executor that the job
store's reads and writes use (a job's completion never waits behind a webhook's lookup)."""


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver."""
    infos = await asyncio.get_running_loop().run_in_executor(
        _RESOLVERS,
        functools.partial(
            socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        ),
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry)
    except ValueError:
        return None


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone is not the address
    except ValueError:
        return None


def _carried(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address it carries to a gateway or a dual stack."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        for inner in (address.ipv4_mapped, address.sixtofour):
            if inner is not None:
                found.append(inner)
        if address in NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _never(address: IPAddress) -> str | None:
    """Why no allow-list entry can open this address; None when one can."""
    for candidate in _carried(address):
        if candidate.is_link_local:
            return "a link-local address (where cloud metadata services answer)"
        if candidate in METADATA:
            return "a cloud metadata service's address"
        if candidate.is_multicast or candidate.is_unspecified:
            return "not a unicast address"
    return None


def _public(address: IPAddress) -> bool:
    return all(candidate.is_global for candidate in _carried(address))
