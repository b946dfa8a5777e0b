"""What the panel shows, as plain data and HTML: no widgets, no I/O.

Kept apart from the widget classes so it can be tested and reasoned about
without a front end; the panel only copies these strings into widgets.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..protocol import ChatMessage

MAX_RENDERED_MESSAGES = 200
"""Chat lines rendered at once; older ones stay in ``app.messages``."""

STATE_COLOURS = {
    "connected": "#1a7f37",
    "relayed": "#9a6700",
    "connecting": "#57606a",
    "new": "#57606a",
    "reconnecting": "#9a6700",
    "lost": "#cf222e",
    "closed": "#cf222e",
}
STATE_LABELS = {"new": "connecting", "closed": "lost"}


@dataclass(frozen=True)
class PeerRow:
    peer_id: str
    name: str
    state: str
    rtt_ms: float | None
    role: str
    services: tuple[str, ...]
    safety_code: str | None = None
    """Compare it with the peer's user: different codes mean a man in the middle."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def peers_html(rows: Iterable[PeerRow]) -> str:
    rows = list(rows)
    if not rows:
        return "<i>No one else is in the room yet.</i>"
    out = [
        "<table class='p2p-peers' style='border-collapse:collapse'>"
        "<tr><th align=left>peer</th><th align=left>state</th>"
        "<th align=right style='padding-right:1em'>RTT</th>"
        "<th align=left>role</th><th align=left>services</th>"
        "<th align=left title='the same on both ends, or someone is in the middle'>"
        "safety code</th></tr>"
    ]
    for r in rows:
        label = STATE_LABELS.get(r.state, r.state)
        colour = STATE_COLOURS.get(r.state, "#57606a")
        rtt = f"{r.rtt_ms:.1f} ms" if r.rtt_ms is not None else "–"
        out.append(
            f"<tr data-peer='{html.escape(r.peer_id)}'>"
            f"<td style='padding-right:1em'>{html.escape(r.name)}</td>"
            f"<td style='padding-right:1em;color:{colour}'>● {label}</td>"
            f"<td style='padding-right:1em' align=right>{rtt}</td>"
            f"<td style='padding-right:1em'>{html.escape(r.role)}</td>"
            f"<td style='padding-right:1em'>{html.escape(', '.join(r.services))}</td>"
            f"<td style='font-family:monospace'>{html.escape(r.safety_code or '–')}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def chat_html(messages: Iterable[ChatMessage], me: str | None, height_px: int = 260) -> str:
    """The newest :data:`MAX_RENDERED_MESSAGES`, newest at the bottom and in view.

    A ``column-reverse`` box keeps its scroll position at the end without any
    script, so the newest line stays visible as lines arrive.
    """
    recent = list(messages)[-MAX_RENDERED_MESSAGES:]
    lines = []
    for m in reversed(recent):
        mine = m.sender == me
        who = "you" if mine else html.escape(m.sender_name or m.sender)
        when = time.strftime("%H:%M:%S", time.localtime(m.ts))
        to = " (private)" if m.to else ""
        style = (
            "background:#ddf4ff;margin-left:3em" if mine else "background:#f6f8fa;margin-right:3em"
        )
        lines.append(
            f"<div class='p2p-msg{' p2p-mine' if mine else ''}' "
            f"style='{style};padding:3px 6px;margin-bottom:3px;border-radius:4px'>"
            f"<span style='color:#57606a;font-size:85%'>{when} <b>{who}</b>{to}</span><br>"
            f"{html.escape(m.text)}</div>"
        )
    if not lines:
        lines.append("<i style='color:#57606a'>No messages yet.</i>")
    return (
        f"<div class='p2p-chat' style='display:flex;flex-direction:column-reverse;"
        f"height:{height_px}px;overflow-y:auto;border:1px solid #d0d7de;padding:4px'>"
        + "".join(lines)
        + "</div>"
    )


def status_html(text: str, errors: list[str]) -> str:
    parts = [f"<span class='p2p-status'>{html.escape(text)}</span>"]
    for err in errors[-3:]:
        parts.append(f"<div class='p2p-error' style='color:#cf222e'>⚠ {html.escape(err)}</div>")
    return "".join(parts)


def offer_text(sender: str, name: str, size: int, kind: str, meta: dict[str, object]) -> str:
    what = f"<b>{html.escape(name)}</b> ({human_bytes(size)})"
    shape = meta.get("shape")
    if kind == "dataframe" and isinstance(shape, list) and len(shape) == 2:
        what += f", DataFrame {shape[0]}×{shape[1]}"
    return f"{html.escape(sender)} offers {what}"


def download_url(path: Path) -> str | None:
    """A link Jupyter serves for ``path``, when the file is under its root folder."""
    base = os.environ.get("P2P_NB_URL")
    root = os.environ.get("P2P_NB_ROOT_DIR")
    if not base or not root:
        return None
    try:
        rel = path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    base_path = "/" + base.split("://", 1)[-1].split("/", 1)[-1] if "://" in base else base
    return f"{base_path.rstrip('/')}/files/{quote(rel.as_posix())}"


def received_html(name: str, path: Path, sender: str, size: int) -> str:
    url = download_url(path)
    label = html.escape(name)
    link = (
        f"<a href='{html.escape(url)}' target='_blank' download "
        f"style='color:var(--jp-content-link-color,#0969da);text-decoration:underline'>"
        f"<b>{label}</b></a>"
        if url
        else f"<b>{label}</b>"
    )
    return (
        f"<div class='p2p-received'>{link} from {html.escape(sender)}, "
        f"{human_bytes(size)} <span style='color:#57606a'>→ {html.escape(str(path))}</span></div>"
    )
