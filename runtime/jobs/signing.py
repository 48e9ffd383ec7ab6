"""Webhook signatures as the Standard Webhooks specification (1.0.0) defines them.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; each signature is
`v1,<base64 HMAC-SHA256>` under a key that is the base64-decoded part of a `whsec_` secret.
Several keys give several signatures, space-separated, so a receiver can move to a new secret
while the old one still verifies (the specification's zero-downtime rotation).

The secrets come from `THAW_WEBHOOK_SECRET`, decoded and checked by `runtime.settings`.

The id stays the same across retries of one event (receivers use it as an idempotency key); the
timestamp is the attempt's, and a retry is signed anew, because receivers refuse a timestamp more
than a few minutes old.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def signature(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per key, space-separated."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")
        for key in keys
    )


def signed_headers(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, webhook_id, timestamp, body),
    }
