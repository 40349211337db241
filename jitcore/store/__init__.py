"""The store: SQLAlchemy models, the repository and Alembic migrations."""

from jitcore.store.db import DEFAULT_DATABASE_URL, Store, make_engine, upgrade

__all__ = ["DEFAULT_DATABASE_URL", "Store", "make_engine", "upgrade"]
