"""Alembic migrations of the run bookkeeping ledger (:mod:`dtlive.storage.ledger`); applied by ``Ledger()``."""
