"""Webhook signatures and the secret setting, checked against `standardwebhooks`, an independent
implementation of the Standard Webhooks specification."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from runtime.jobs.signing import signature, signed_headers
from runtime.settings import Settings, SettingsError

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER = "whsec_" + base64.b64encode(b"another key of twenty-four+").decode()


def test_a_signature_verifies_with_an_independent_library() -> None:
    body = b'{"type":"job.completed","data":{"id":"j1"}}'
    now = int(time.time())
    headers = signed_headers([KEY], "msg_1", now, body)
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.completed", "data": {"id": "j1"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(body, headers)


def test_the_signature_covers_the_id_and_the_timestamp() -> None:
    body = b"{}"
    assert signature([KEY], "msg_1", 1, body) != signature([KEY], "msg_2", 1, body)
    assert signature([KEY], "msg_1", 1, body) != signature([KEY], "msg_1", 2, body)
    when = datetime.fromtimestamp(1_700_000_000, UTC)
    expected = Webhook(SECRET).sign("msg_1", when, "{}")
    assert signature([KEY], "msg_1", 1_700_000_000, body) == expected


def test_two_secrets_sign_twice_so_either_verifies_while_receivers_rotate() -> None:
    other = base64.b64decode(OTHER.removeprefix("whsec_"))
    body = b"{}"
    headers = signed_headers([KEY, other], "msg_1", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(SECRET).verify(body, headers) == {}
    assert Webhook(OTHER).verify(body, headers) == {}


def test_the_secret_setting_decodes_to_keys() -> None:
    settings = Settings.from_env({"THAW_WEBHOOK_HOSTS": "h", "THAW_WEBHOOK_SECRET": SECRET})
    assert settings.webhooks.keys == (KEY,)
    unpadded = SECRET.rstrip("=") + " " + OTHER
    settings = Settings.from_env({"THAW_WEBHOOK_HOSTS": "h", "THAW_WEBHOOK_SECRET": unpadded})
    assert len(settings.webhooks.keys) == 2
    assert SECRET.removeprefix("whsec_") not in repr(settings)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        (base64.b64encode(KEY).decode(), "must start with 'whsec_'"),
        ("whsec_not*base64!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "holds 5 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "holds 65 bytes"),
        (SECRET + " whsec_", "secret 2"),
    ],
)
def test_a_malformed_secret_fails_at_start_naming_the_variable_not_the_secret(
    secret: str, says: str
) -> None:
    with pytest.raises(SettingsError, match="THAW_WEBHOOK_SECRET") as raised:
        Settings.from_env(
            {"THAW_WEBHOOK_HOSTS": "hooks.example.com", "THAW_WEBHOOK_SECRET": secret}
        )
    assert says in str(raised.value)
    assert secret.removeprefix("whsec_")[:8] not in str(raised.value)


def test_hosts_without_a_secret_fail_at_start() -> None:
    with pytest.raises(SettingsError, match="THAW_WEBHOOK_SECRET must be set"):
        Settings.from_env({"THAW_WEBHOOK_HOSTS": "hooks.example.com"})
