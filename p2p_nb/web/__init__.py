"""The browser peer: static files (plain ES modules, no build step) served by
both adapters, the standalone server and the Jupyter extension.

The page is one template: each adapter fills in where its static files and
its Socket.IO endpoint are, and which credentials it takes (a Jupyter server
reads its own token from ``?token=`` and an invite from ``?invite_token=``; the
standalone server reads either from the Socket.IO ``auth`` payload). Nothing
here reaches the network: the JavaScript it needs is vendored in
``static/vendor/`` and pinned by ``static/vendor/SHA256SUMS``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Root of the files the browser loads (``index.html`` is the template)."""
VENDOR_DIR = STATIC_DIR / "vendor"
STATIC_PATH = "p2p/web/"
"""Where the static files are served, below the service's base URL."""
JOIN_PATH = "p2p/join"
"""The page's own address below the base URL (invite links name it)."""

Host = Literal["standalone", "jupyter"]


@cache
def _template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def _inline_script_hashes(page: str) -> list[str]:
    """CSP hashes of the page's inline executable scripts (the import map):
    the policy then needs no ``'unsafe-inline'``."""
    hashes = []
    for match in re.finditer(r'<script type="importmap">(.*?)</script>', page, re.S):
        digest = hashlib.sha256(match.group(1).encode()).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return hashes


_NETLOC = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def check_remote_server(url: str) -> str:
    """``url`` if the page may name it as a remote signaling service (an
    http(s) base URL with a plain host: it goes into the CSP header);
    ``ValueError`` otherwise, so a typo stops the server at start."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not _NETLOC.match(parts.netloc)
        or parts.query
        or parts.fragment
        or any(c in parts.path for c in " ;,'\"<>")
    ):
        raise ValueError(f"a remote signaling server is an http(s) base URL, not {url!r}")
    return url if url.endswith("/") else url + "/"


def _origins(url: str) -> list[str]:
    """CSP sources for a remote server: its origin and its WebSocket twin
    (Chromium does not match ``ws:`` against an ``http:`` source)."""
    parts = urlsplit(url)
    socket = "wss" if parts.scheme == "https" else "ws"
    return [f"{parts.scheme}://{parts.netloc}", f"{socket}://{parts.netloc}"]


def render_page(
    base_url: str, host: Host, remote_servers: Sequence[str] = ()
) -> tuple[str, dict[str, str]]:
    """The join page for a service at ``base_url`` (ending in ``/``): its HTML
    and the headers it goes with (no caching, no referrer, a strict CSP).

    ``remote_servers``: base URLs of other (standalone) signaling services the
    page may connect to, for an invite link whose fragment names one
    (``server=``): its operator trusts this page's origin with the room
    secret rather than the remote operator's (docs/protocol.md, section 8).
    The CSP lets the page connect to their origins and nowhere else.

    The base URL is the operator's, never a client's, and still goes into the
    page only as JSON inside a non-executed script element, ``<`` escaped."""
    if not base_url.endswith("/"):
        base_url += "/"
    remotes = [check_remote_server(url) for url in remote_servers]
    connect = sorted({source for url in remotes for source in _origins(url)})
    static = base_url + STATIC_PATH
    config = json.dumps(
        {
            "host": host,
            "socketPath": base_url + "p2p/socket.io/",
            "base": base_url,
            "remotes": remotes,
        }
    ).replace("<", "\\u003c")
    page = (
        _template()
        .replace("__STATIC__", static.replace('"', "%22").replace("<", "%3C"))
        .replace("__CONFIG__", config)
    )
    csp = "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' " + " ".join(_inline_script_hashes(page)),
            " ".join(["connect-src 'self'", *connect]),
            "img-src 'self' data: blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": csp,
    }
    return page, headers


def vendored_files() -> dict[str, str]:
    """``{path below vendor/: sha256}`` as ``static/vendor/SHA256SUMS`` records them."""
    sums: dict[str, str] = {}
    for line in (VENDOR_DIR / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums
