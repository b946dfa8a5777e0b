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
await app.send_message(f"hello {{hello.data.sender_name}}, {me} here")
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
await app.send_message(f"thanks! amount by region: {by_region.to_dict()}")
""",
    "panel.close()",
)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    books = {
        "01-chat-ana.ipynb": chat("ana", "ben", "02-chat-ben.ipynb", True),
        "02-chat-ben.ipynb": chat("ben", "ana", "01-chat-ana.ipynb", False),
        "03-dataframe-ana.ipynb": DF_SENDER,
        "04-dataframe-ben.ipynb": DF_RECEIVER,
    }
    for name, nb in books.items():
        nbformat.write(nb, OUT / name)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
