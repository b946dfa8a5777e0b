"""The Jupyter server extension; its entry point is ``p2p_nb._jupyter_server_extension_points``.

Empty on purpose: ``jupyter server extension list`` imports only ``.app``.
"""
