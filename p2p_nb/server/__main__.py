"""``p2p-nb-signal``: run the signaling service on its own, without Jupyter."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from urllib.parse import quote

from aiohttp import web

from ..errors import InviteError
from ..invite import check_server_url
from ..turn import TurnServer
from ..web import check_remote_server
from .keyfile import KeyFileError, default_key_path
from .limits import ServerLimits
from .standalone import create_app, make_runner


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2p-nb-signal",
        description="Standalone p2p-nb signaling server (rooms, presence, offer/answer relay).",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4000, help="TCP port (default 4000; 0 picks one)")
    p.add_argument(
        "--token",
        default=None,
        help="token clients must present; a random one is generated and printed if omitted",
    )
    p.add_argument(
        "--no-token",
        action="store_true",
        help="accept every client (only for a trusted network)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="browser origin allowed to connect (repeatable); default: same origin only",
    )
    p.add_argument(
        "--remote-server",
        action="append",
        default=None,
        type=_remote_server,
        metavar="URL",
        help=(
            "another (standalone) signaling server the web client served here may "
            "connect to, for invite links to it opened here (repeatable); that "
            "server's --cors-origin must name this one's origin"
        ),
    )
    p.add_argument("--max-peers-per-room", type=int, default=ServerLimits.max_peers_per_room)
    p.add_argument(
        "--resume-grace",
        type=float,
        default=ServerLimits.resume_grace,
        help="seconds a dropped peer keeps its place before others hear it left",
    )
    p.add_argument(
        "--resume-key",
        default=None,
        help="secret that signs resume secrets (default: $P2P_NB_RESUME_KEY, else "
        "the resume key file); prefer the file: a command line is visible to other users",
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument(
        "--resume-key-file",
        default=None,
        metavar="PATH",
        help="keep the resume key in this file (created with mode 0600 if missing), and "
        "the revoked invites beside it, so peers keep their ids and invites work (and "
        "revoked ones stay out) across restarts (default: "
        "$XDG_STATE_HOME/p2p-nb/resume-PORT.key and revoked-PORT.json, "
        "~/.local/state/p2p-nb/... without it; with --port 0, nothing is kept)",
    )
    keys.add_argument(
        "--no-resume-key-file",
        action="store_true",
        help="keep nothing on disk: a random resume key per run, so a restart gives "
        "every peer a new id (their links are rebuilt; chat not yet confirmed is sent "
        "again) and ends every invite",
    )
    p.add_argument(
        "--no-relay",
        action="store_true",
        help="never carry data between peers that cannot connect directly "
        "(relayed frames are sealed end to end; this server still sees their size and timing)",
    )
    p.add_argument(
        "--public-url",
        default=None,
        type=_public_url,
        metavar="URL",
        help="the base URL others reach this server at (behind a proxy or a tunnel): "
        "what invite links name; default: the URL each client connected to",
    )
    p.add_argument(
        "--turn-url",
        action="append",
        default=None,
        metavar="URL",
        help="TURN server (turn:host:port) for which every joining peer gets "
        "time-limited credentials (repeatable; needs --turn-secret)",
    )
    p.add_argument(
        "--turn-secret",
        default=None,
        help="the TURN server's shared secret (coturn --static-auth-secret); "
        "default: $P2P_NB_TURN_SECRET",
    )
    p.add_argument(
        "--turn-ttl",
        type=int,
        default=TurnServer.ttl,
        help="seconds the TURN credentials stay valid (default one day)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def turn_server(args: argparse.Namespace) -> TurnServer | None:
    secret = args.turn_secret or os.environ.get("P2P_NB_TURN_SECRET")
    if not args.turn_url:
        if args.turn_secret:
            raise SystemExit("p2p-nb-signal: --turn-secret needs --turn-url")
        return None
    if not secret:
        raise SystemExit("p2p-nb-signal: --turn-url needs --turn-secret (or $P2P_NB_TURN_SECRET)")
    try:
        return TurnServer(tuple(args.turn_url), secret, args.turn_ttl)
    except ValueError as exc:
        raise SystemExit(f"p2p-nb-signal: {exc}") from None


async def serve(args: argparse.Namespace, turn: TurnServer | None) -> None:
    token = None if args.no_token else (args.token or secrets.token_hex(24))
    limits = ServerLimits(
        max_peers_per_room=args.max_peers_per_room,
        resume_grace=args.resume_grace,
        allow_relay=not args.no_relay,
    )
    try:
        app, _ = create_app(
            token,
            limits=limits,
            cors_allowed_origins=args.cors_origin,
            resume_key=args.resume_key.encode() if args.resume_key else None,
            resume_key_file=resume_key_file(args),
            turn=turn,
            public_url=args.public_url,
            remote_servers=args.remote_server,
        )
    except KeyFileError as exc:
        raise SystemExit(f"p2p-nb-signal: {exc}") from None
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}/"
    print(f"p2p-nb signaling server listening on {url}", flush=True)
    # As Jupyter does: the web client's address with the token. The page takes
    # the token out of the address bar and its history at once, and this
    # server's access log redacts query values.
    page = args.public_url or url
    page = page if page.endswith("/") else page + "/"
    print(
        f"    in a browser: {page}?token={quote(token)}" if token else f"    in a browser: {page}",
        flush=True,
    )
    if token:
        print(f"    connect with: P2PApp.connect(url={url!r}, token={token!r})", flush=True)
        # Not a ?token= URL: query strings end up in proxies' and browsers' logs.
        print(
            f'    other clients: header "Authorization: token {token}" '
            '(or the Socket.IO auth payload {"token": ...})',
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("p2p-nb signaling server stopping: telling clients, closing connections", flush=True)
    await runner.cleanup()
    print("p2p-nb signaling server stopped", flush=True)


def resume_key_file(args: argparse.Namespace) -> str | None:
    """The file the resume key lives in: ``--resume-key-file``, else the state
    folder's file for this port (none with ``--no-resume-key-file`` or port 0,
    whose restart lands on another port anyway)."""
    if args.no_resume_key_file:
        return None
    if args.resume_key_file:
        return str(args.resume_key_file)
    return str(default_key_path(args.port)) if args.port else None


def _public_url(value: str) -> str:
    """argparse's check of ``--public-url``: a usage error now, not a failed invite later."""
    try:
        return check_server_url(value)
    except InviteError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _remote_server(value: str) -> str:
    try:
        return check_remote_server(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    turn = turn_server(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(serve(args, turn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
