"""Where webhooks may go: the allow-list, the URL checks, and the address checks made at
submission and again at every delivery (DNS rebinding)."""

from __future__ import annotations

import asyncio

import pytest

from runtime.jobs.destinations import (
    AllowList,
    Reach,
    WebhookRefused,
    parse,
    refusal,
    vetted,
)
from runtime.settings import Settings, SettingsError

SECRET = "whsec_" + "A" * 32


def allow(hosts: str) -> AllowList:
    settings = Settings.from_env({"THAW_WEBHOOK_HOSTS": hosts, "THAW_WEBHOOK_SECRET": SECRET})
    return AllowList(settings.webhooks.hosts)


def test_empty_hosts_mean_webhooks_are_off() -> None:
    assert not Settings.from_env({}).webhooks.enabled
    assert not Settings.from_env({"THAW_WEBHOOK_HOSTS": " , "}).webhooks.enabled


@pytest.mark.parametrize(
    ("hosts", "host", "reach"),
    [
        ("hooks.example.com", "hooks.example.com", Reach.LISTED),
        ("Hooks.Example.COM", "hooks.example.com", Reach.LISTED),
        ("hooks.example.com", "other.example.com", None),
        ("*.example.com", "a.b.example.com", Reach.LISTED),
        ("*.example.com", "example.com", None),
        ("*.example.com", "badexample.com", None),
        ("127.0.0.1", "127.0.0.1", Reach.LISTED),
        ("127.0.0.1", "localhost", None),
        ("10.0.0.0/8", "10.1.2.3", Reach.LISTED),
        ("10.0.0.0/8", "11.1.2.3", None),
        ("[::1]", "::1", Reach.LISTED),
        ("*", "anything.example", Reach.PUBLIC),
        ("*,127.0.0.1", "127.0.0.1", Reach.LISTED),
    ],
)
def test_the_allow_list(hosts: str, host: str, reach: Reach | None) -> None:
    assert allow(hosts).reach(host) is reach


@pytest.mark.parametrize("entry", ["http://x.example", "a b", "10.0.0.1/8", "-x-"])
def test_a_bad_entry_fails_at_start_naming_the_variable(entry: str) -> None:
    with pytest.raises(SettingsError, match="THAW_WEBHOOK_HOSTS"):
        allow(entry)


def test_a_url_is_split_into_what_the_request_needs() -> None:
    destination = parse("HTTPS://Hooks.Example.com:8443/in/hook?token=s3cret#frag", allow("*"))
    assert (destination.scheme, destination.host, destination.port) == (
        "https",
        "hooks.example.com",
        8443,
    )
    assert destination.target == "/in/hook?token=s3cret"
    assert destination.authority == "hooks.example.com:8443"
    assert destination.shown == "https://hooks.example.com:8443/in/hook"  # no token in logs
    plain = parse("http://[::1]", allow("::1"))
    assert (plain.port, plain.target, plain.authority) == (80, "/", "[::1]")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://127.0.0.1/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("127.0.0.1/x", "http or https"),
        ("http://u:p@127.0.0.1/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1:99999/", "port"),
        ("http://127.0.0.1/a b", "no spaces"),
        ("http://127.0.0.1/\r\nX-Injected: 1", "no spaces"),
        ("http://bücher.example/", "xn--"),
        ("http://other.example/", "not in the allowed hosts"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ("http://0.0.0.0/", "not a unicast"),
        ("http://" + "a" * 2100 + ".example/", "longer than"),
    ],
)
def test_urls_thaw_will_not_call(url: str, says: str) -> None:
    listed = "127.0.0.1,169.254.169.254,fe80::/10,::ffff:0:0/96,64:ff9b::/96,0.0.0.0"
    with pytest.raises(WebhookRefused, match=says):
        parse(url, allow(listed))


def test_a_star_reaches_public_addresses_only() -> None:
    for url in ("http://127.0.0.1/", "http://10.0.0.1/", "http://[::1]/", "http://100.64.0.1/"):
        with pytest.raises(WebhookRefused, match="not a public address"):
            parse(url, allow("*"))
    assert parse("http://203.0.114.1/", allow("*")).reach is Reach.PUBLIC


@pytest.mark.parametrize(
    ("address", "reach", "refused"),
    [
        ("169.254.169.254", Reach.LISTED, True),
        ("fe80::1", Reach.LISTED, True),
        ("::ffff:169.254.169.254", Reach.LISTED, True),
        ("127.0.0.1", Reach.LISTED, False),
        ("127.0.0.1", Reach.PUBLIC, True),
        ("fd00:ec2::254", Reach.PUBLIC, True),  # AWS's IPv6 metadata address is private
        ("8.8.8.8", Reach.PUBLIC, False),
    ],
)
def test_addresses(address: str, reach: Reach, refused: bool) -> None:
    assert (refusal(address, reach) is not None) is refused


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_at_delivery() -> None:
    destination = parse("http://hooks.example.com/", allow("hooks.example.com"))
    answers = {"now": ["203.0.113.5"]}

    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 80)
        return answers["now"]

    assert asyncio.run(vetted(destination, resolve)) == ["203.0.113.5"]
    answers["now"] = ["203.0.113.5", "169.254.169.254"]  # rebound
    with pytest.raises(WebhookRefused, match=r"resolves to 169\.254\.169\.254: a link-local"):
        asyncio.run(vetted(destination, resolve))
    answers["now"] = []
    with pytest.raises(OSError, match="no address"):
        asyncio.run(vetted(destination, resolve))
