"""A PostgreSQL for the benchmarks that need one (scale-out, takeover, power sync with
roles split): the tests' own server (tests/conftest.py ``PostgresServer``) in a
temporary directory, started on entry, stopped and removed on exit, with a fresh
database per ``database()`` call."""
from __future__ import annotations

from tests.conftest import PostgresServer, _admin, _pg_bindir


class BenchPostgres:
    def __init__(self, what: str = "this benchmark"):
        bindir = _pg_bindir()
        if bindir is None:
            raise SystemExit(f"{what}: PostgreSQL (initdb/postgres) not found: "
                             "sudo scripts/install-system-packages")
        self.server = PostgresServer(bindir)
        self.made = 0

    def __enter__(self) -> BenchPostgres:
        self.server.initdb()
        self.server.start()
        return self

    def database(self, name: str | None = None) -> str:
        """A new empty database's URL (``name``, else bench1, bench2, ...)."""
        self.made += 1
        name = name or f"bench{self.made}"
        _admin(self.server.url("postgres"), f"CREATE DATABASE {name}")
        return self.server.url(name)

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.server.remove()
