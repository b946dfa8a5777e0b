"""What the panel shows, as plain data and HTML: no widgets, no I/O.

Kept apart from the widget classes so it can be tested and reasoned about
without a front end; the panel only copies these strings into widgets.

Every text that reaches these functions may come from another party (a peer's
name, capabilities, file names, DataFrame names and metadata, cancel reasons,
exception texts that quote any of those): ipywidgets ``HTML`` sets
``innerHTML`` in the Jupyter origin, so one unescaped field is a script that
can drive the user's kernels. Each function therefore passes every value it
interpolates through :func:`esc`, and the panel builds no HTML of its own.

Every such text is also isolated (:func:`iso`, a ``<bdi>``): a name ending in
right-to-left text would otherwise pull the time or the words beside it into
its own direction ("Ana 9:14:06 مرحبا" read as something else).
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..protocol import ChatMessage

MAX_RENDERED_MESSAGES = 200
"""Chat lines rendered at once; older ones stay in ``app.messages``."""
MAX_CELL_CHARS = 80
"""Characters of one preview cell (or column name) shown; the rest becomes "…"."""

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


def esc(value: object) -> str:
    """The one escaping helper: any value as text that HTML shows literally.

    ``quote=True`` also escapes ``'`` and ``"``, so the result is safe inside
    attribute values as well as element content.
    """
    return html.escape(str(value), quote=True)


def iso(value: object) -> str:
    """Another party's text, escaped and bidi-isolated from what stands around it."""
    return f"<bdi>{esc(value)}</bdi>"


def clip(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked with "…" when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


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


@dataclass(frozen=True)
class Preview:
    """The first rows of a received table, as plain text cells (see ``preview.py``)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = field(default=())
    """What was left out (columns, bytes read), said under the table."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _bytes(n: object) -> str:
    """:func:`human_bytes` of a number from an event, or the value escaped if it is none."""
    if isinstance(n, int | float) and not isinstance(n, bool):
        return human_bytes(n)
    return esc(n)


def title_html(room: str | None, name: str, peer_id: str | None) -> str:
    return (
        f"<b>p2p-nb</b> · room <b>{esc(room)}</b> · you are <b>{iso(name)}</b> "
        f"<span style='color:#57606a'>({esc(peer_id)})</span>"
    )


def section_html(title: str) -> str:
    return f"<div style='margin-top:6px;font-weight:bold'>{esc(title)}</div>"


def peers_html(rows: Iterable[PeerRow], *, in_room: bool = True) -> str:
    """The peer table; after leaving (``in_room=False``) nobody is shown as connected."""
    if not in_room:
        return "<i>Not in a room.</i>"
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
            f"<tr data-peer='{esc(r.peer_id)}'>"
            f"<td style='padding-right:1em'>{iso(r.name)}</td>"
            f"<td style='padding-right:1em;color:{colour}'>● {esc(label)}</td>"
            f"<td style='padding-right:1em' align=right>{esc(rtt)}</td>"
            f"<td style='padding-right:1em'>{esc(r.role)}</td>"
            f"<td style='padding-right:1em'>{esc(', '.join(r.services))}</td>"
            f"<td style='font-family:monospace'>{esc(r.safety_code or '–')}</td></tr>"
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
        who = "you" if mine else iso(m.sender_name or m.sender)
        try:
            when = time.strftime("%H:%M:%S", time.localtime(m.ts))
        except (OverflowError, OSError, ValueError, TypeError):  # a peer's clock, any value
            when = "--:--:--"
        to = " (private)" if m.to else ""
        style = (
            "background:#ddf4ff;margin-left:3em" if mine else "background:#f6f8fa;margin-right:3em"
        )
        lines.append(
            f"<div class='p2p-msg{' p2p-mine' if mine else ''}' "
            f"style='{style};padding:3px 6px;margin-bottom:3px;border-radius:4px'>"
            f"<span style='color:#57606a;font-size:85%'>{esc(when)} <b>{who}</b>{to}</span>"
            f"<div dir='auto'>{esc(m.text)}</div></div>"
        )
    if not lines:
        lines.append("<i style='color:#57606a'>No messages yet.</i>")
    return (
        f"<div class='p2p-chat' style='display:flex;flex-direction:column-reverse;"
        f"height:{int(height_px)}px;overflow-y:auto;border:1px solid #d0d7de;padding:4px'>"
        + "".join(lines)
        + "</div>"
    )


def status_html(text: str, errors: list[str], notice: str = "") -> str:
    parts = [f"<span class='p2p-status'>{esc(text)}</span>"]
    if notice:
        parts.append(f"<div class='p2p-notice' style='color:#9a6700'>ⓘ {esc(notice)}</div>")
    for err in errors[-3:]:
        parts.append(f"<div class='p2p-error' style='color:#cf222e'>⚠ {esc(err)}</div>")
    return "".join(parts)


def offer_text(sender: str, name: str, size: int, kind: str, meta: dict[str, object]) -> str:
    what = f"<b>{iso(name)}</b> ({_bytes(size)})"
    shape = meta.get("shape")
    if kind == "dataframe" and isinstance(shape, list) and len(shape) == 2:
        what += f", DataFrame {esc(shape[0])}×{esc(shape[1])}"
    return f"{iso(sender)} offers {what}"


def progress_html(done: object, total: object, name: str, rate: object) -> str:
    return f"{_bytes(done)} of {_bytes(total)} of <b>{iso(name)}</b> · {_bytes(rate)}/s"


def sent_html(name: str) -> str:
    return f"sent <b>{iso(name)}</b>"


def received_label_html(name: str) -> str:
    return f"received <b>{iso(name)}</b>"


def failed_html(name: str, reason: object) -> str:
    return f"<b>{iso(name)}</b> failed: {iso(reason)}"


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
    label = iso(name)
    link = (
        f"<a href='{esc(url)}' target='_blank' download "
        f"style='color:var(--jp-content-link-color,#0969da);text-decoration:underline'>"
        f"<b>{label}</b></a>"
        if url
        else f"<b>{label}</b>"
    )
    return (
        f"<div class='p2p-received'>{link} from {iso(sender)}, "
        f"{_bytes(size)} <span style='color:#57606a'>→ {esc(path)}</span></div>"
    )


def preview_pending_html() -> str:
    return "<i class='p2p-preview-pending' style='color:#57606a'>preview…</i>"


def preview_error_html(reason: object) -> str:
    """Why there is no preview (a limit, or the reader's exception text, escaped)."""
    return f"<i class='p2p-preview-none'>no preview: {esc(reason)}</i>"


def preview_html(preview: Preview, max_cell_chars: int = MAX_CELL_CHARS) -> str:
    """A table of the preview's cells, each escaped and cut to ``max_cell_chars``."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(f"<{tag}>{esc(clip(str(v), max_cell_chars))}</{tag}>" for v in values)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in preview.rows)
    notes = "".join(
        f"<div style='color:#57606a;font-size:85%'>{esc(n)}</div>" for n in preview.notes
    )
    return (
        "<div class='p2p-preview'><table class='dataframe' border='1'>"
        f"<thead><tr>{cells('th', preview.columns)}</tr></thead>"
        f"<tbody>{body}</tbody></table>{notes}</div>"
    )
