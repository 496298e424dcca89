"""The detector and its pure physics: rows, decoding, windows, window products, messages, quality rules, simulation.

numpy, pandas, xarray and scipy only: nothing here talks to Kafka, a database or a screen.
"""
