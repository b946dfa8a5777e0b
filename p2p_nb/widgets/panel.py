"""``ChatPanel``: the ipywidgets chat and file panel for one room.

It only calls the app API and listens to its events. Widget callbacks may run
on a comm subshell thread (JupyterLab 4 + ipykernel 7), so they never touch
asyncio objects of their own thread: work goes to the app's network thread,
and every widget update is marshalled back onto the loop the panel was built on.

Every HTML string comes from :mod:`.view`, which escapes all it interpolates:
the panel shows other parties' text (names, file names, reasons) and builds no
markup itself. Previews of received tables are read by :mod:`.preview` in the
panel's own worker thread, so a hostile file cannot stall the kernel's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..app import P2PApp, run_blocking
from ..events import Event
from ..invite import parse_invite
from ..transfer import FileShare, IncomingTransfer, ReceivedFile
from . import preview, view

log = logging.getLogger(__name__)

UPLOAD_LIMIT = 8 * 2**20
"""Largest file accepted from the upload button: the picked file travels to the
kernel in one comm message, and Jupyter closes a websocket over 10 MiB."""
PEER_REFRESH_SECONDS = 2.0
PLAIN_INVITE_NOTICE = (
    "This invite link carries no room secret: the signaling server's operator stays "
    "trusted (join with secret=p2p_nb.new_room_secret() to keep them out)."
)
PREVIEW_SUFFIXES = frozenset({".csv", ".tsv", ".parquet"})
"""Received plain files that get a table preview of their first rows."""


def _connect_blocking(**kwargs: Any) -> P2PApp:
    """Connect on a network thread from synchronous code, even inside a running loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["app"] = asyncio.run(P2PApp.connect(thread=True, **kwargs))
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="p2p-nb-connect")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    app: P2PApp = box["app"]
    return app


class ChatPanel:
    """Joins ``room`` and shows peers, chat, file offers, transfers and received files.

    ``ChatPanel(room="demo", name="ana")`` in a cell; the last expression of
    the cell (``panel``) displays it. ``panel.app`` is the :class:`P2PApp`.
    ``capabilities`` (a dict or :class:`~p2p_nb.capabilities.Capabilities`) are
    advertised on join; other keywords go to :meth:`P2PApp.connect`.
    """

    def __init__(
        self,
        room: str | None = None,
        name: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        invite: str | None = None,
        secret: str | None = None,
        app: P2PApp | None = None,
        capabilities: Any = None,
        upload_limit: int = UPLOAD_LIMIT,
        **connect_kwargs: Any,
    ) -> None:
        self.upload_limit = upload_limit
        if app is None:
            if invite is not None:
                connect_kwargs["invite"] = invite
            app = _connect_blocking(url=url, token=token, **connect_kwargs)
        self.app = app
        if self.app._net is None:
            raise ValueError("ChatPanel needs an app on a network thread (thread=True)")
        if self.app.room is None:
            join = self.app.join_room(room, name, capabilities=capabilities, secret=secret)
            run_blocking(self.app, join, timeout=30)
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._errors: list[str] = []
        self._status = ""
        self._notice = ""
        """A line under the status (not an error): why the last invite is weaker."""
        self._closed = False
        self._progress: dict[tuple[str, str], tuple[w.FloatProgress, w.HTML]] = {}
        self._offer_rows: dict[str, w.HBox] = {}
        self._incoming: dict[str, IncomingTransfer] = {}
        """Offers seen and not yet finished, by transfer id: the panel's own copy,
        so it never reads the transfer manager's dicts the network thread changes."""
        self._uploads: set[concurrent.futures.Future[Any]] = set()
        """Shares of uploaded copies until their temporary folder is removed."""
        self.preview_limits = preview.PreviewLimits()
        self._previews = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="p2p-nb-preview"
        )
        """One worker thread: previews queue up instead of competing for the CPU."""
        self._build()
        self._off = self.app.on("*", self._on_event)
        self._ticker: asyncio.Task[None] | None = None
        if self._loop is not None:
            self._ticker = self._loop.create_task(self._tick())
        self._refresh_all()

    # ------------------------------------------------------------ widgets
    def _build(self) -> None:
        app = self.app
        self.title = w.HTML(view.title_html(app.room, app.name, app.peer_id))
        self.status = w.HTML()
        self.peers = w.HTML()
        self.chat = w.HTML()
        self.input = w.Text(
            placeholder="Type a message and press Enter",
            continuous_update=False,
            layout=w.Layout(flex="1"),
        )
        self.send_button = w.Button(description="Send", button_style="primary")
        self.upload = w.FileUpload(
            description=f"Share a file (≤ {view.human_bytes(self.upload_limit)})",
            multiple=False,
            layout=w.Layout(width="auto"),
        )
        self.path = w.Text(
            placeholder="…or a path on the kernel's machine", layout=w.Layout(flex="1")
        )
        self.path_button = w.Button(description="Share path")
        self.leave_button = w.Button(description="Leave room", button_style="warning")
        self.invite_button = w.Button(
            description="Invite", tooltip="A link for someone to join this room (one day)"
        )
        self.invite_link = w.Text(
            description="Invite link",
            placeholder="Invite makes a link for someone to join this room",
            layout=w.Layout(flex="1", display="none"),
        )
        self.offers = w.VBox()
        self.transfers = w.VBox()
        self.received = w.VBox()
        self.input.observe(self._on_input, names="value")
        self.send_button.on_click(lambda _: self._send_text())
        self.upload.observe(self._on_upload, names="value")
        self.path_button.on_click(lambda _: self._share_path())
        self.leave_button.on_click(lambda _: self.close())
        self.invite_button.on_click(lambda _: self._invite())
        section = view.section_html
        self.widget = w.VBox(
            [
                w.HBox(
                    [self.title, w.HBox([self.invite_button, self.leave_button])],
                    layout=w.Layout(justify_content="space-between"),
                ),
                w.HBox([self.invite_link]),
                self.status,
                w.HTML(section("Peers")),
                self.peers,
                w.HTML(section("Chat")),
                self.chat,
                w.HBox([self.input, self.send_button]),
                w.HTML(section("Files")),
                w.HBox([self.upload, self.path, self.path_button]),
                self.offers,
                self.transfers,
                self.received,
            ],
            layout=w.Layout(border="1px solid #d0d7de", padding="8px", max_width="900px"),
        )
        self.widget.add_class("p2p-panel")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # ----------------------------------------------------------- threading
    def _ui(self, fn: Callable[[], None]) -> None:
        """Run a widget update on the panel's loop (or now, if we are on it)."""
        loop = self._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or loop is current or loop.is_closed():
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _submit(
        self,
        coro: Coroutine[Any, Any, Any],
        what: str,
        then: Callable[[], None] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Hand work to the network thread; failures show up in the panel, and
        ``then`` runs (on the panel's loop) after success."""
        assert self.app._net is not None
        future = self.app._net.submit(coro)

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                return
            if f.exception() is not None:
                self._ui(lambda: self._error(f"{what}: {f.exception()}"))
            elif then is not None:
                self._ui(then)

        future.add_done_callback(done)
        return future

    def _error(self, text: str) -> None:
        self._errors.append(text)
        self._render_status()

    # ------------------------------------------------------------- actions
    def _on_input(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._send_text()

    def _send_text(self) -> None:
        text = self.input.value.strip()
        if not text:
            return
        self.input.value = ""
        self._submit(self.app.send_message(text), "message not sent", then=self._render_chat)

    def send(self, text: str) -> None:
        """Send a chat message to everyone (from code)."""
        run_blocking(self.app, self.app.send_message(text), timeout=30)
        self._render_chat()

    def share_file(self, path: str | Path, to: str | None = None) -> FileShare:
        """Offer a file on the kernel's machine; returns once the offer is out."""
        return run_blocking(self.app, self.app.share_file(path, to), timeout=600)

    def share_dataframe(self, df: Any, name: str, **kwargs: Any) -> FileShare:
        """Offer a DataFrame (Parquet by default, see P2PApp.share_dataframe)."""
        return run_blocking(self.app, self.app.share_dataframe(df, name, **kwargs), timeout=600)

    def _share_path(self) -> None:
        raw = self.path.value.strip()
        if not raw:
            return
        path = Path(raw).expanduser()
        if not path.is_file():
            self._error(f"no such file on the kernel's machine: {path}")
            return
        self.path.value = ""
        self._submit(self.app.share_file(path), f"could not share {path.name}")

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        for item in files:
            name, size = str(item["name"]), int(item["size"])
            if size > self.upload_limit:
                self._error(
                    f"{name} is {view.human_bytes(size)}: the upload button takes at most "
                    f"{view.human_bytes(self.upload_limit)}. Share it by path instead "
                    "(the box beside it, or panel.share_file(path))."
                )
                continue
            folder = Path(tempfile.mkdtemp(prefix="p2p-nb-upload-"))
            try:
                target = folder / (Path(name).name or "upload")
                target.write_bytes(bytes(item["content"]))
            except OSError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                self._error(f"could not share {name}: {exc}")
                continue
            job = self._submit(self._share_upload(target, name), f"could not share {name}")
            self._uploads.add(job)
            job.add_done_callback(self._uploads.discard)
        self.upload.value = ()

    async def _share_upload(self, target: Path, name: str) -> None:
        """Share an uploaded copy; its temporary folder goes once nobody needs it:
        at once if the share fails, else when every transfer of it has ended."""
        try:
            share = await self.app.share_file(target, name=name)
            await share.wait()
        finally:
            shutil.rmtree(target.parent, ignore_errors=True)

    # -------------------------------------------------------------- events
    def _on_event(self, event: Event) -> None:
        if self._closed:
            return
        handler = getattr(self, f"_ev_{event.name}", None)
        if handler is not None:
            handler(event)
        elif event.name.startswith("peer_") or event.name == "joined":
            self._render_peers()
            self._render_status()

    def _ev_quality(self, event: Event) -> None:
        self._render_peers()

    def _ev_message(self, event: Event) -> None:
        self._render_chat()

    def _ev_message_sent(self, event: Event) -> None:
        """Our own message, also when sent from code (``app.send_message``)."""
        self._render_chat()

    def _ev_safety_code(self, event: Event) -> None:
        self._render_peers()

    def _ev_safety_code_changed(self, event: Event) -> None:
        data = event.data
        self._error(
            f"{data['name']}'s safety code changed from {data['old']} to {data['new']}: "
            "another certificate at the other end; compare the new code with them again"
        )
        self._render_peers()

    def _invite(self) -> None:
        """Make an invite link and show it, ready to copy (a Text widget: never markup)."""
        job = self._submit(self.app.create_invite(), "no invite")

        def made(f: concurrent.futures.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None:
                link = str(f.result())
                self._ui(lambda: self._show_invite(link))

        job.add_done_callback(made)

    def _show_invite(self, link: str) -> None:
        self.invite_link.value = link
        self.invite_link.layout.display = "flex"
        self._notice = "" if parse_invite(link).secret else PLAIN_INVITE_NOTICE
        self._render_status()

    def _ev_error(self, event: Event) -> None:
        self._error(str(event.data))

    def _ev_undelivered(self, event: Event) -> None:
        who = event.data["name"]
        lost, unsure = event.data["messages"], event.data["unconfirmed"]
        if lost:
            self._error(f"{len(lost)} message(s) to {who} were not delivered")
        if unsure:
            self._error(f"{len(unsure)} message(s) to {who} may not have arrived")

    def _ev_signaling_lost(self, event: Event) -> None:
        self._error(event.data.get("message", "signaling connection lost"))

    def _ev_disconnected(self, event: Event) -> None:
        self._status = "Left the room."
        self._render_peers()
        self._render_status()

    def _ev_file_offer(self, event: Event) -> None:
        offer: IncomingTransfer = event.data
        self._incoming[offer.id] = offer
        text = w.HTML(
            view.offer_text(offer.sender_name, offer.name, offer.size, offer.kind, offer.meta)
        )
        accept = w.Button(description="Accept", button_style="success")
        decline = w.Button(description="Decline")
        row = w.HBox([text, accept, decline])
        row.add_class("p2p-offer")

        def answer(accepted: bool) -> None:
            accept.disabled = decline.disabled = True
            self._drop_offer(offer.id)
            if accepted:
                self._submit(offer.accept(), f"could not accept {offer.name}")
            else:
                self._submit(offer.decline("declined in the panel"), "decline failed")

        accept.on_click(lambda _: answer(True))
        decline.on_click(lambda _: answer(False))
        self._offer_rows[offer.id] = row
        self.offers.children = (*self.offers.children, row)

    def _drop_offer(self, transfer_id: str) -> None:
        row = self._offer_rows.pop(transfer_id, None)
        if row is not None:
            self.offers.children = tuple(c for c in self.offers.children if c is not row)

    def _bar(self, data: dict[str, Any], peer_id: str | None) -> tuple[w.FloatProgress, w.HTML]:
        key = (str(data["id"]), str(data["direction"]))
        if key not in self._progress:
            peer = self.app.peers.get(peer_id or "")
            who = peer.name if peer else peer_id
            arrow = "→" if data["direction"] == "send" else "←"
            bar = w.FloatProgress(
                min=0, max=max(1, int(data["total"])), value=0, description=f"{arrow} {who}"
            )
            label = w.HTML()
            row = w.HBox([bar, label])
            row.add_class("p2p-transfer")
            self._progress[key] = (bar, label)
            self.transfers.children = (*self.transfers.children, row)
        return self._progress[key]

    def _ev_file_progress(self, event: Event) -> None:
        data = event.data
        self._drop_offer(str(data["id"]))
        bar, label = self._bar(data, event.peer_id)
        bar.value = float(data["bytes"])
        label.value = view.progress_html(data["bytes"], data["total"], data["name"], data["rate"])

    def _finish_bar(self, data: dict[str, Any], peer_id: str | None, ok: bool, text: str) -> None:
        bar, label = self._bar(data, peer_id)
        if ok:
            bar.value = bar.max
        bar.bar_style = "success" if ok else "danger"
        label.value = text

    def _ev_file_sent(self, event: Event) -> None:
        data = {**event.data, "direction": "send", "total": event.data["size"]}
        self._finish_bar(data, event.peer_id, True, view.sent_html(data["name"]))

    def _transfer_id(self, rec: ReceivedFile) -> str:
        """The id of the offer ``rec`` came from, from the panel's own copy of the
        offers (``t.record`` is set before the event is emitted)."""
        tid = next((t.id for t in list(self._incoming.values()) if t.record is rec), None)
        if tid is None:
            return rec.name
        del self._incoming[tid]
        return tid

    def _ev_file_received(self, event: Event) -> None:
        rec: ReceivedFile = event.data
        tid = self._transfer_id(rec)
        data = {"id": tid, "direction": "receive", "total": rec.size, "name": rec.name}
        self._finish_bar(data, event.peer_id, True, view.received_label_html(rec.name))
        row: list[w.Widget] = [
            w.HTML(view.received_html(rec.name, rec.path, rec.sender_name, rec.size))
        ]
        if rec.kind == "dataframe" or rec.path.suffix.lower() in PREVIEW_SUFFIXES:
            shown = w.HTML(view.preview_pending_html())
            row.append(shown)
            self._start_preview(rec, shown)
        box = w.VBox(row)
        box.add_class("p2p-received-row")
        self.received.children = (*self.received.children, box)

    def _start_preview(self, rec: ReceivedFile, shown: w.HTML) -> None:
        """Read the preview in the panel's worker thread; show it when it is ready."""
        try:
            job = self._previews.submit(
                preview.read_preview,
                rec.path,
                rec.meta.get("format"),
                rec.kind,
                self.preview_limits,
            )
        except RuntimeError:  # the panel closed meanwhile
            return

        def done(f: concurrent.futures.Future[view.Preview]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            text = (
                view.preview_error_html(exc) if exc is not None else view.preview_html(f.result())
            )

            def show() -> None:
                shown.value = text

            self._ui(show)

        job.add_done_callback(done)

    def _ev_transfer_failed(self, event: Event) -> None:
        data = event.data
        self._drop_offer(str(data["id"]))
        self._incoming.pop(str(data["id"]), None)
        self._finish_bar(data, event.peer_id, False, view.failed_html(data["name"], data["reason"]))

    # ------------------------------------------------------------ rendering
    def _rows(self) -> list[view.PeerRow]:
        rows = []
        for pid, info in self.app.peers.items():
            code = None
            try:
                status = self.app.connection_status(pid)
                rtt = status.rtt * 1000 if status.rtt is not None else None
                code = status.safety_code if status.state == "connected" else None
            except Exception:
                rtt = None
            caps = info.capabilities or {}
            services = caps.get("services") or ()
            rows.append(
                view.PeerRow(
                    peer_id=pid,
                    name=info.name,
                    state=info.state,
                    rtt_ms=rtt,
                    role=str(caps.get("role", "basic")),
                    safety_code=code,
                    services=tuple(str(s) for s in services)
                    if isinstance(services, list | tuple)
                    else (),
                )
            )
        return sorted(rows, key=lambda r: r.name)

    def _render_peers(self) -> None:
        in_room = not self._closed and self.app.room is not None
        self.peers.value = view.peers_html(self._rows() if in_room else (), in_room=in_room)

    def _render_chat(self) -> None:
        self.chat.value = view.chat_html(list(self.app.messages), self.app.peer_id)

    def _render_status(self) -> None:
        if not self._status:
            n_peers = len(self.app.peers)
            n_up = len(self.app.connected_peers())
            text = f"Connected to {n_up} of {n_peers} peer{'s' if n_peers != 1 else ''}."
        else:
            text = self._status
        self.status.value = view.status_html(text, self._errors, self._notice)

    def _refresh_all(self) -> None:
        self._render_peers()
        self._render_chat()
        self._render_status()

    async def _tick(self) -> None:
        while not self._closed:
            await asyncio.sleep(PEER_REFRESH_SECONDS)
            self._render_peers()

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        """Leave the room cleanly and disable the panel."""
        if self._closed:
            return
        self._closed = True
        self._off()
        if self._ticker is not None:
            self._ticker.cancel()
        net = self.app._net
        if net is not None and not net.is_current and not self.app._closed:
            try:
                run_blocking(self.app, self.app.disconnect(), timeout=15)
            except Exception as exc:
                log.warning("disconnect: %s", exc)
        self._previews.shutdown(wait=False, cancel_futures=True)
        for widget in (
            self.input,
            self.send_button,
            self.upload,
            self.path,
            self.path_button,
            self.leave_button,
            self.invite_button,
        ):
            widget.disabled = True
        self._status = "Left the room."
        self._render_peers()
        self._render_status()

    def __repr__(self) -> str:
        return f"<ChatPanel {self.app!r}>"
