"""Security headers for what the signaling service serves over plain HTTP.

The join page brings its own policy (:func:`p2p_nb.web.render_page`: scripts
from its origin and its one hashed import map). Everything else, the page's
static files and the JSON endpoints, is never meant to be a document: each
response says its type is final (``nosniff``: a file is never run as a script
or a page because of what it looks like), and its policy allows nothing, so a
file opened directly (``index.html`` of the static folder, an SVG) runs no
script and cannot be framed. A policy on a script or style response does not
apply to the page that loads it, so the page works as before.
"""

from __future__ import annotations

NOSNIFF = ("X-Content-Type-Options", "nosniff")
SUBRESOURCE_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
"""The policy of every response but the join page."""


def subresource_headers() -> dict[str, str]:
    """Headers for a static file or a JSON reply of the service."""
    return {NOSNIFF[0]: NOSNIFF[1], "Content-Security-Policy": SUBRESOURCE_CSP}
