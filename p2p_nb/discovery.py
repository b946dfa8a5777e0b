"""Find the signaling server a kernel should use, without asking the user.

Inside JupyterLab the kernel's own Jupyter server runs the signaling extension,
so its URL and token are all a notebook needs. An explicit environment wins, so
CI (nbclient), remote kernels and shared standalone servers keep working.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

URL_ENV = "P2P_NB_URL"
TOKEN_ENV = "P2P_NB_TOKEN"  # noqa: S105 (the variable's name, not a secret)
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (compared, never bound)


def discover_server() -> tuple[str, str] | None:
    """Return ``(base_url, token)`` of the signaling server, or None if unknown.

    Order: ``P2P_NB_URL``/``P2P_NB_TOKEN`` (set by the user, or by the server
    extension for the kernels it starts), then the runtime info file of the
    Jupyter server whose pid is ``JPY_PARENT_PID``. On JupyterHub that file's
    token is empty and ``JUPYTERHUB_API_TOKEN`` is the credential instead. That
    fallback never applies to an explicit URL, which may be someone else's server.
    """
    url = os.environ.get(URL_ENV)
    if url:
        return url, os.environ.get(TOKEN_ENV, "")
    info = _parent_server_info()
    if info is None:
        return None
    base_url = _local_url(info)
    if base_url is None:
        return None
    token = info.get("token") or os.environ.get("JUPYTERHUB_API_TOKEN", "")
    return base_url, str(token)


def _local_url(info: dict[str, object]) -> str | None:
    """Rebuild the URL from host and port: the file's ``url`` names the machine's
    host name when the server listens on a wildcard address, which need not resolve."""
    if info.get("sock"):
        return None  # a UNIX socket: nothing a kernel's HTTP client can use
    host, port, path = info.get("hostname"), info.get("port"), info.get("base_url") or "/"
    if isinstance(host, str) and isinstance(port, int) and port > 0 and isinstance(path, str):
        host = "127.0.0.1" if host in _WILDCARD_HOSTS else f"[{host}]" if ":" in host else host
        scheme = "https" if info.get("secure") else "http"
        inner = path.strip("/")
        return f"{scheme}://{host}:{port}/{inner}/" if inner else f"{scheme}://{host}:{port}/"
    url = info.get("url")
    return url if isinstance(url, str) and url else None


def _parent_server_info() -> dict[str, object] | None:
    """The ``jpserver-<pid>.json`` of the server that started this kernel, if any."""
    pid = os.environ.get("JPY_PARENT_PID", "")
    if not pid.isdigit():
        return None
    from jupyter_core.paths import jupyter_runtime_dir  # only needed on this path

    path = Path(jupyter_runtime_dir()) / f"jpserver-{pid}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.debug("no usable server info at %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None
