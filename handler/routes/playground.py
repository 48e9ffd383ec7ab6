"""The playground at `/`: one page, its stylesheet, script and icon, from `handler/static/`.

No build step: the files are served as committed. They are read on first request, not at import,
so a cold start does not pay for them. The page talks only to its own origin, so its
Content-Security-Policy allows nothing else: no inline script or style, no other host.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

STATIC = Path(__file__).resolve().parent.parent / "static"

# What `/playground/{name}` serves: an allowlist, so no request names any other file.
ASSETS = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
PAGE = "playground.html"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",  # the generated PNG is shown from a blob: URL
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",  # the form is sent by the script, never by the browser
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(tags=["playground"], include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def load(name: str, media_type: str) -> Asset:
    body = (STATIC / name).read_bytes()
    return Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


def respond(request: Request, asset: Asset) -> Response:
    # `no-cache` revalidates each time (a 304 when unchanged), so a new release shows at once.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/")
async def playground(request: Request) -> Response:
    """The playground page."""
    return respond(request, load(PAGE, "text/html; charset=utf-8"))


@router.get("/playground/{name}")
async def playground_asset(request: Request, name: str) -> Response:
    """The page's stylesheet, script and icon."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no playground file {name[:64]!r}")
    return respond(request, load(name, media_type))
