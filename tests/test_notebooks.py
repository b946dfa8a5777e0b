"""The demo notebooks, executed top to bottom by nbclient against the embedded endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .jupyter_server import JupyterServer

pytestmark = pytest.mark.anyio

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def outputs(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )


async def run_together(
    server: JupyterServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *names: str
) -> list[nbformat.NotebookNode]:
    """Execute demo notebooks at once, each in its own folder, like users would.

    nbclient's kernels have no parent server: they are pointed at the embedded
    endpoint the way the docs tell remote kernels to (P2P_NB_URL/P2P_NB_TOKEN).
    """
    monkeypatch.setenv("P2P_NB_URL", server.url)
    monkeypatch.setenv("P2P_NB_TOKEN", server.token)
    books = [nbformat.read(NOTEBOOKS / name, as_version=4) for name in names]
    clients = []
    for nb, name in zip(books, names, strict=True):
        folder = tmp_path / Path(name).stem
        folder.mkdir()
        clients.append(
            NotebookClient(
                nb,
                timeout=180,
                kernel_name="python3",
                resources={"metadata": {"path": str(folder)}},
            )
        )
    await asyncio.gather(*(c.async_execute() for c in clients))
    return books


def reprs(nb: nbformat.NotebookNode) -> str:
    """The plain-text form of every cell's result (what a reader sees under a cell)."""
    return "".join(
        out.get("data", {}).get("text/plain", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


def test_notebooks_are_committed_without_outputs() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], path.name
                assert cell.execution_count is None, path.name


async def test_two_chat_notebooks_talk(
    jupyter_server: JupyterServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    books = await run_together(
        jupyter_server, monkeypatch, tmp_path, "01-chat-ana.ipynb", "02-chat-ben.ipynb"
    )
    ana, ben = (outputs(nb) for nb in books)
    assert "connected to ['ben']" in ana
    assert "ben: hello ana, ben here" in ana
    assert "ana: hi ben, this is ana" in ben
    assert "#1 ana: hi ben, this is ana" in ana
    assert "p2p-panel" not in ana  # the panel is a widget, not text output
    assert "#1 ben: hello ana, ben here" in ben
    for nb in books:  # a demo cell shows what a reader wants, not an object's repr
        assert "ChatMessage(" not in reprs(nb)


async def test_dataframe_notebooks(
    jupyter_server: JupyterServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    books = await run_together(
        jupyter_server, monkeypatch, tmp_path, "03-dataframe-ana.ipynb", "04-dataframe-ben.ipynb"
    )
    ana, ben = (outputs(nb) for nb in books)
    assert "'done'" in ana
    assert "ben: thanks! amount by region: {" in ana
    assert "ana offers sales_q3.parquet: 10000 rows," in ben
    # ben's kernel saved it beside its notebook, in p2p_downloads/
    assert (tmp_path / "04-dataframe-ben" / "p2p_downloads" / "sales_q3.parquet").is_file()
    dtypes = next(c for c in books[1].cells if "sales.dtypes" in c.source).outputs[-1]
    text = dtypes["data"]["text/plain"]
    assert "datetime64[ns, Europe/Berlin]" in text or "datetime64[us, Europe/Berlin]" in text
    assert "category" in text
    assert "Int64" in text
    assert "ChatMessage(" not in reprs(books[1])


async def test_mesh_room_notebook(
    jupyter_server: JupyterServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (nb,) = await run_together(jupyter_server, monkeypatch, tmp_path, "05-mesh-room.ipynb")
    text = outputs(nb)
    assert "connected to ['gpu-box', 'laptop', 'relay-box']" in text
    assert "4 peers, 6 links, complete: True" in text
    assert "gpu: ['gpu-box']" in text
    assert "relay: ['relay-box']" in text
    assert "gpu-box now offers ['messaging', 'file_transfer', 'gpu', 'cuda-12']" in text
    tables = [
        out["data"]["text/plain"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "execute_result"
    ]
    caps, quality = tables[-2], tables[-1]
    assert "super_peer" not in caps  # only the others are listed
    assert "Asia/Tokyo" in caps
    assert "connected" in quality
    assert "direct" in quality
