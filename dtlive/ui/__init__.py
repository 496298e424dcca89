"""What people look at: the live accumulator, the bqplot/ipywidgets dashboard and its Voila notebook.
"""
