"""How dtlive runs: the ``dtlive`` command line, the whole stack from Python, and JupyterHub.
"""
