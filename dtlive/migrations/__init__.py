"""Alembic migrations of the run bookkeeping ledger (:mod:`dtlive.ledger`); applied by ``Ledger()``."""
