"""Write the demo notebooks in notebooks/ (outputs empty). Edit here, then run:

.venv/bin/python scripts/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent.parent / "notebooks"


def notebook(*cells: str) -> nbformat.NotebookNode:
    nb = new_notebook(
        cells=[
            new_markdown_cell(c[3:].strip()) if c.startswith("md:") else new_code_cell(c.strip())
            for c in cells
        ]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


WAIT_FOR_PEER = """
async with asyncio.timeout(300):
    while not app.connected_peers():
        await links.get()
print("connected to", sorted(peer.name for peer in app.peers.values()))
"""


def chat(me: str, other: str, other_file: str, first: bool) -> nbformat.NotebookNode:
    if first:
        talk = f"""
await app.send_message("hi {other}, this is {me}")
reply = await inbox.get(timeout=300)
print(f"{{reply.data.sender_name}}: {{reply.data.text}}")
"""
    else:
        talk = f"""
hello = await inbox.get(timeout=300)
print(f"{{hello.data.sender_name}}: {{hello.data.text}}")
sent = await app.send_message(f"hello {{hello.data.sender_name}}, {me} here")
"""
    return notebook(
        f"""md: # p2p-nb chat: {me}

Run this notebook and **{other}'s** (`{other_file}`) side by side: each has its own
kernel, and they chat over a direct WebRTC data channel. The Jupyter server only
introduces them (the p2p-nb server extension): no URL or token to type.

The panel below is live: type in it, or use the API as the cells further down do.""",
        f"""
import asyncio

import p2p_nb

panel = p2p_nb.ChatPanel(room="demo", name="{me}")  # joins the room "demo"
app = panel.app                                      # the P2PApp behind the panel
inbox = app.events("message")                        # every message from now on
links = app.events("peer_connected")
panel
""",
        f"md: Wait for {other} (start the other notebook now if you have not):",
        WAIT_FOR_PEER,
        talk,
        "md: Every message so far, in order, with its per-sender sequence number:",
        'for m in app.messages:\n    print(f"#{m.seq} {m.sender_name}: {m.text}")',
        "md: Leave the room (the panel says so, and the other side sees you leave):",
        "panel.close()",
    )


DF_SENDER = notebook(
    """md: # Share a DataFrame: ana's side

Run this with `04-dataframe-ben.ipynb`. ana builds a DataFrame with the dtypes
that CSV round trips usually break (time zones, categoricals, nullable integers,
strings, a named index) and shares it; ben's kernel gets it as Parquet, works on
it and answers. Nothing passes through a server.""",
    """
import asyncio

import numpy as np
import pandas as pd

import p2p_nb

panel = p2p_nb.ChatPanel(room="dataframes", name="ana")
app = panel.app
inbox = app.events("message")
links = app.events("peer_connected")
panel
""",
    """
rng = np.random.default_rng(3)
n = 10_000
sales = pd.DataFrame(
    {
        "when": pd.date_range("2026-07-01", periods=n, freq="13min", tz="Europe/Berlin"),
        "region": pd.Categorical(rng.choice(["north", "south", "east", "west"], n)),
        "units": pd.array(rng.integers(0, 50, n), dtype="Int64"),
        "amount": rng.gamma(2.0, 40.0, n).round(2),
        "customer": pd.array([f"c{i % 977}" for i in range(n)], dtype="string"),
    },
    index=pd.RangeIndex(n, name="order_id"),
)
sales.loc[::97, "units"] = pd.NA
sales.head()
""",
    "md: Wait for ben, then offer the DataFrame (ben accepts it in the panel or in code):",
    WAIT_FOR_PEER,
    """
share = await app.share_dataframe(sales, name="sales_q3")
print(await share.wait(timeout=300))
""",
    "md: ben answers with a summary computed on his side:",
    """
reply = await inbox.get(timeout=300)
print(f"{reply.data.sender_name}: {reply.data.text}")
""",
    "panel.close()",
)

DF_RECEIVER = notebook(
    """md: # Share a DataFrame: ben's side

Run this with `03-dataframe-ana.ipynb`. The offer shows in the panel (Accept /
Decline); this notebook accepts it in code, then works on the DataFrame.""",
    """
import asyncio

import p2p_nb

panel = p2p_nb.ChatPanel(room="dataframes", name="ben")
app = panel.app
offers = app.events("file_offer")
arrivals = app.events("file_received")
panel
""",
    """
offer = (await offers.get(timeout=300)).data
print(f"{offer.sender_name} offers {offer.name}: {offer.meta['shape'][0]} rows,")
print("columns", dict(zip(offer.meta["columns"], offer.meta["dtypes"])))
await offer.accept()
""",
    """
record = (await arrivals.get(timeout=300)).data
sales = app.received["sales_q3"].dataframe()  # same dtypes and index as on ana's side
print(record.path, f"{record.size:,} bytes, sha256 {record.sha256[:12]}…")
sales.dtypes
""",
    """
by_region = sales.groupby("region", observed=True)["amount"].sum().round(2)
by_region
""",
    """
sent = await app.send_message(f"thanks! amount by region: {by_region.to_dict()}")
""",
    "panel.close()",
)


MESH_ROOM = notebook(
    """md: # A room of four: mesh state, capabilities, connection quality

Runs on its own. Besides this notebook's panel ("you"), three more peers join
from this same kernel, each on its own network thread: stand-ins for colleagues'
kernels. Every pair of peers has its own direct data channel (a full mesh).""",
    """
import asyncio

import pandas as pd

import p2p_nb
from p2p_nb.app import P2PApp

panel = p2p_nb.ChatPanel(
    room="mesh-demo",
    name="you",
    capabilities={"role": "super_peer", "region": "eu-west", "timezone": "Europe/Paris"},
)
app = panel.app
links = app.events("peer_connected")
updates = app.events("peer_updated")
panel
""",
    """
colleagues = {
    "relay-box": {"role": "relay", "services": ["messaging", "relay"], "region": "eu-west"},
    "gpu-box": {"services": ["messaging", "file_transfer", "gpu"], "region": "us-east"},
    "laptop": {"max_connections": 8, "timezone": "Asia/Tokyo"},
}
others, their_links = [], []
for name, caps in colleagues.items():
    peer = await P2PApp.connect(thread=True)  # same Jupyter server, discovered
    their_links.append(peer.events("peer_connected"))
    await peer.join_room("mesh-demo", name=name, capabilities=caps)
    others.append(peer)

async with asyncio.timeout(60):  # until every peer has a link to every other
    for peer, stream in zip([app, *others], [links, *their_links]):
        while len(peer.connected_peers()) < len(others):
            await stream.get()
names = {app.peer_id: "you", **{pid: p.name for pid, p in app.peers.items()}}
print("connected to", sorted(names[pid] for pid in app.connected_peers()))
""",
    "md: Every peer reports its own links; `validate_mesh()` puts the room's picture together:",
    """
report = await app.validate_mesh()
print(f"{len(report.members)} peers, {len(report.connected)} links, complete: {report.complete}")
for a, b in report.connected:
    print(f"  {names[a]:>9} <-> {names[b]}")
""",
    "md: What each peer says it can do (advertised on join, updated live):",
    """
pd.DataFrame(
    [
        {
            "peer": names[pid],
            "role": caps.role,
            "services": ", ".join(caps.services),
            "max links": caps.max_connections,
            "region": caps.region,
            "time zone": caps.timezone,
        }
        for pid, caps in app.all_remote_capabilities().items()
    ]
).set_index("peer").sort_index()
""",
    """
print("gpu:", [names[pid] for pid in app.find_peers_with_service("gpu")])
print("relay:", [names[pid] for pid in app.find_peers_with_service("relay")])
""",
    """
gpu_box = others[1]
await gpu_box.update_capabilities(services=["messaging", "file_transfer", "gpu", "cuda-12"])
changed = await updates.get(timeout=30)
print(names[changed.peer_id], "now offers", list(changed.data["capabilities"].services))
""",
    "md: Connection quality per link: our own ping/pong RTT, traffic, send buffer:",
    """
quality = app.events("quality")
async with asyncio.timeout(30):  # one round of pings has to come back first
    while any(q.rtt is None for q in app.all_connection_qualities().values()):
        await quality.get()
pd.DataFrame(
    [
        {
            "peer": names[pid],
            "state": q.state,
            "via": q.transport,
            "RTT ms": round(q.rtt * 1000, 2),
            "sent B": q.bytes_sent,
            "received B": q.bytes_received,
            "buffered B": q.buffered,
        }
        for pid, q in app.all_connection_qualities().items()
    ]
).set_index("peer").sort_index()
""",
    """
for peer in others:
    await peer.disconnect()
panel.close()
""",
)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    books = {
        "01-chat-ana.ipynb": chat("ana", "ben", "02-chat-ben.ipynb", True),
        "02-chat-ben.ipynb": chat("ben", "ana", "01-chat-ana.ipynb", False),
        "03-dataframe-ana.ipynb": DF_SENDER,
        "04-dataframe-ben.ipynb": DF_RECEIVER,
        "05-mesh-room.ipynb": MESH_ROOM,
    }
    for name, nb in books.items():
        nbformat.write(nb, OUT / name)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
