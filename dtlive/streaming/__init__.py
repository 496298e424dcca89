"""The processing graph as streamz nodes, the exactly-once processor, its Dask scale-out and the file replay.
"""
