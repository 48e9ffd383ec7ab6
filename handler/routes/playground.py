"""The playground at `/`: one page, its stylesheet, scripts and icon, from `handler/static/`.

No build step: the files are served as committed. They are read on first request, not at import,
so a cold start does not pay for them. The page talks only to its own origin, so its
Content-Security-Policy allows nothing else: no inline script or style, no other host.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

STATIC = Path(__file__).resolve().parent.parent / "static"

PAGE = "playground.html"
# What `/playground/{name}` serves: files of `handler/static` with these suffixes and a plain
# name (no path, no dot-file), so no request reaches any other file.
MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # the page's ES modules
    ".svg": "image/svg+xml",
}
ASSET_NAME = re.compile(r"[a-z][a-z0-9-]*\.(?:css|js|svg)")

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


def asset(body: bytes, media_type: str) -> Asset:
    return Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


@cache
def assets() -> dict[str, Asset]:
    """Every file the page may load, by name: read once, on first use."""
    return {
        path.name: asset(path.read_bytes(), MEDIA_TYPES[path.suffix])
        for path in sorted(STATIC.iterdir())
        if ASSET_NAME.fullmatch(path.name)
    }


@cache
def page() -> Asset:
    return asset((STATIC / PAGE).read_bytes(), "text/html; charset=utf-8")


def respond(request: Request, file: Asset) -> Response:
    # `no-cache` revalidates each time (a 304 when unchanged), so a new release shows at once.
    headers = {**SECURITY_HEADERS, "ETag": file.etag, "Cache-Control": "no-cache"}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def playground(request: Request) -> Response:
    """The playground page."""
    return respond(request, page())


@router.get("/playground/{name}")
async def playground_asset(request: Request, name: str) -> Response:
    """The page's stylesheet, scripts and icon."""
    found = assets().get(name)
    if found is None:
        raise HTTPException(404, f"no playground file {name[:64]!r}")
    return respond(request, found)
