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
    # nbclient's kernels have no parent server: point them at the embedded
    # endpoint the way the docs tell remote kernels to.
    monkeypatch.setenv("P2P_NB_URL", jupyter_server.url)
    monkeypatch.setenv("P2P_NB_TOKEN", jupyter_server.token)
    books = [
        nbformat.read(NOTEBOOKS / n, as_version=4)
        for n in ("01-chat-ana.ipynb", "02-chat-ben.ipynb")
    ]
    clients = [
        NotebookClient(
            nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        for nb in books
    ]
    await asyncio.gather(*(c.async_execute() for c in clients))
    ana, ben = (outputs(nb) for nb in books)
    assert "connected to ['ben']" in ana
    assert "ben: hello ana, ben here" in ana
    assert "ana: hi ben, this is ana" in ben
    assert "#1 ana: hi ben, this is ana" in ana
    assert "#1 ben: hello ana, ben here" in ben
