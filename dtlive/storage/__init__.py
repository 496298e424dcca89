"""What dtlive keeps: the ledger (runs, offsets, periods, task history), its migrations, the history store
of window results, and the recorder that fills them.
"""
