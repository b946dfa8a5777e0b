"""The notebook panel (ipywidgets). Imported on demand: ``p2p_nb.ChatPanel``."""

from .panel import UPLOAD_LIMIT, ChatPanel

__all__ = ["UPLOAD_LIMIT", "ChatPanel"]
