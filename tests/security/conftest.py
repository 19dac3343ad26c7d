"""The store fixtures (`backend`, `store`: SQLite and a real PostgreSQL) for security tests of the stores."""

from tests.store.conftest import backend, pg_database, store  # noqa: F401 (fixtures)
