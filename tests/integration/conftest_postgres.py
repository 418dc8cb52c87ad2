"""PostgreSQL fixtures, loaded as a plugin (`pytest_plugins = ["tests.integration.conftest_postgres"]`).

One throwaway server per session (devtools/postgres.py: initdb into a temporary folder, a free
loopback port, stopped by its pid). When it cannot start, the tests that need it are skipped, or
fail under FILECAST_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.postgres import PostgresServer, create_customers
from devtools.services import ServiceUnavailable
from tests.helpers import unavailable

BIG_ROWS = 1_000_000


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except ServiceUnavailable as exc:
        unavailable("PostgreSQL", exc)
    with server:
        yield server


@pytest.fixture(scope="session")
def pg_customers(postgres: PostgresServer) -> str:
    """`customers`: the demo's 100,000 customers, in PostgreSQL."""
    create_customers(postgres, "customers", 100_000)
    return "customers"


@pytest.fixture(scope="session")
def pg_big_customers(postgres: PostgresServer) -> str:
    """`big_customers`: 1,000,000 rows of the same shape."""
    create_customers(postgres, "big_customers", BIG_ROWS)
    return "big_customers"
