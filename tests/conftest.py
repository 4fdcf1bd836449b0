"""Fixtures for every tier: a real PostgreSQL server, and a database on each backend.

``postgres_url`` starts one PostgreSQL server for the whole session (only when a
test asks for it); ``db_url`` hands each test a fresh, migrated, empty database,
once on SQLite and once on PostgreSQL.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from conductor.db import migrate
from conductor.db.engine import make_engine
from tests.waiting import wait_until

TESTS = Path(__file__).resolve().parent

#: The top-level test directories; each is a tier and its marker (pytest.ini).
TIERS = ("unit", "integration", "db", "functional", "security")
#: Functional modules that boot QEMU VMs or a whole virtual lab: marked ``slow``.
SLOW_MODULES = {"test_qemu_deploy.py", "test_ipxe_qemu.py", "test_lab_deploy.py",
                "test_demo.py", "test_pxe_boot.py", "test_qemu_ab_update.py",
                "test_console_lab_deploy.py", "test_lab_takeover.py"}
#: Per-test timeouts (s) by tier; pytest.ini's ``timeout`` (300) is the default. An
#: explicit ``@pytest.mark.timeout`` on a test wins.
TIMEOUTS = {"unit": 60, "slow": 1200}


def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier (by directory), ``slow`` for the QEMU/lab modules,
    and the tier's timeout."""
    for item in items:
        try:
            parts = item.path.resolve().relative_to(TESTS).parts
        except ValueError:
            continue
        tier = parts[0] if len(parts) > 1 else None
        if tier not in TIERS:
            continue
        item.add_marker(tier)
        if tier == "functional" and item.path.name in SLOW_MODULES:
            item.add_marker("slow")
        if item.get_closest_marker("timeout") is None:
            for name, seconds in TIMEOUTS.items():
                if item.get_closest_marker(name) is not None:
                    item.add_marker(pytest.mark.timeout(seconds))
                    break


#: The Debian package that provides initdb/postgres (scripts/install-system-packages).
PG_PACKAGE = "postgresql"
PG_START_TIMEOUT = 30.0
PG_STOP_TIMEOUT = 30.0


def _pg_bindir() -> Path | None:
    """The directory holding initdb and postgres, or None when not installed."""
    candidates = []
    if shutil.which("pg_config"):
        proc = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if proc.returncode == 0:
            candidates.append(Path(proc.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def _missing_postgres() -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL server not found: CI must install the Debian package "
                    f"{PG_PACKAGE!r} (scripts/install-system-packages).", pytrace=False)
    pytest.fail(f"PostgreSQL server not found (initdb/postgres). Install it with "
                f"`sudo scripts/install-system-packages` (Debian package {PG_PACKAGE!r}); "
                "the DB tier is not skipped on purpose.", pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One throw-away PostgreSQL cluster in a temp dir, run as ``postgres`` when root."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="metalcast-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        if self.as_root:
            # postgres refuses to run as root; the cluster belongs to its own user.
            shutil.chown(self.root, "postgres", "postgres")

    def _cmd(self, *args) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(args)

    def initdb(self) -> None:
        proc = subprocess.run(self._cmd(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"),
            capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"initdb failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}",
                        pytrace=False)

    def start(self) -> None:
        """Start the postmaster on a free loopback port; retry if the port was taken."""
        for _attempt in range(3):
            self.port = _free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(self._cmd(
                    str(self.bindir / "postgres"), "-D", str(self.data),
                    "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.root}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200"),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return
        pytest.fail(f"PostgreSQL did not start; log {self.log}:\n{self._log_tail()}",
                    pytrace=False)

    def _wait_ready(self) -> bool:
        """True once it accepts connections; False if it exited (port taken meanwhile)."""
        engine = sa.create_engine(self.url("postgres"), poolclass=sa.pool.NullPool)

        def settled() -> str | None:
            if self.proc.poll() is not None:
                return "exited"
            with engine.connect():
                return "ready"
        try:
            return wait_until(settled, PG_START_TIMEOUT, 0.1, "PostgreSQL to accept "
                              "connections", ignore=sa.exc.OperationalError) == "ready"
        except AssertionError as exc:
            self.stop()
            pytest.fail(f"{exc}; log {self.log}:\n{self._log_tail()}", pytrace=False)
        finally:
            engine.dispose()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of our postmaster by its PID, then wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self._postmaster_pid()
        try:
            os.kill(pid or self.proc.pid, signal.SIGINT)
            self.proc.wait(PG_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(pid or self.proc.pid, signal.SIGQUIT)
            self.proc.wait(PG_STOP_TIMEOUT)
        except ProcessLookupError:
            self.proc.wait(PG_STOP_TIMEOUT)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def _admin(url: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the session: URL of an empty database ``metalcast``."""
    bindir = _pg_bindir()
    if bindir is None:
        _missing_postgres()
    server = PostgresServer(bindir)
    try:
        server.initdb()
        server.start()
        _admin(server.url("postgres"), "CREATE DATABASE metalcast")
        yield server.url("metalcast")
    finally:
        server.stop()
        server.remove()


@pytest.fixture(scope="session")
def _postgres_test_database(postgres_url):
    """The database ``db_url`` hands out on PostgreSQL, emptied before each test."""
    _admin(postgres_url, "CREATE DATABASE metalcast_tests")
    return sa.engine.make_url(postgres_url).set(database="metalcast_tests").render_as_string(
        hide_password=False)


def _empty_postgres(url: str) -> str:
    """Empty ``url``'s database: a fresh schema costs ~0.02 s, CREATE DATABASE ~0.3 s."""
    _admin(url,
           # Connections a previous test leaked would block DROP SCHEMA.
           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE datname = current_database() AND pid <> pg_backend_pid()",
           "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database migrated to head, on each backend, for one test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metalcast.sqlite'}"
    else:
        url = _empty_postgres(request.getfixturevalue("_postgres_test_database"))
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url
