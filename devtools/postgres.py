"""A throwaway PostgreSQL server for the tests, the demo and the benchmark.

`PostgresServer.start()` runs `initdb` into a fresh temporary folder and starts `postgres` on a
free loopback port, as a child process stopped by its own pid (fast shutdown), then removes the
folder. PostgreSQL refuses to run as root: under root the server runs as the `postgres` user the
Debian package creates (or FILECAST_PG_USER). Password authentication (SCRAM) is on for TCP, so a
wrong password is a real authentication failure.

    python -m devtools.postgres   # starts one and prints its URI until Ctrl-C

Binaries: FILECAST_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin, else `pg_ctl` on PATH.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.services import Service, ServiceUnavailable, free_port, wait_for_port

USER = "filecast"
PASSWORD = "filecast-pg-secret"  # a test server on loopback only
DATABASE = "filecast"


def pg_bin() -> Path:
    """The folder holding `initdb` and `postgres`."""
    configured = os.environ.get("FILECAST_PG_BIN")
    if configured:
        return Path(configured)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ServiceUnavailable(
        "PostgreSQL is not installed: `apt-get install -y postgresql` (Debian), "
        "or set FILECAST_PG_BIN to the folder holding initdb and postgres"
    )


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("FILECAST_PG_USER", "postgres")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServiceUnavailable(
            f"PostgreSQL cannot run as root and there is no `{name}` user: "
            f"`useradd --system {name}` or set FILECAST_PG_USER"
        ) from None
    return entry.pw_uid, entry.pw_gid


@dataclass
class PostgresServer(Service):
    port: int = 0
    workdir: Path = field(default_factory=Path)
    user: str = USER
    password: str = PASSWORD
    database: str = DATABASE

    @classmethod
    def start(cls, *, settings: dict[str, str] | None = None) -> PostgresServer:
        """Initialise and start a server; `settings` are extra `-c name=value` server settings."""
        bin_dir = pg_bin()
        owner = _run_as()
        workdir = Path(tempfile.mkdtemp(prefix="filecast-pg-"))
        self = cls(port=free_port(), workdir=workdir)
        data = workdir / "data"
        self.log_path = workdir / "postgres.log"
        pwfile = workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if owner is not None:
            os.chown(workdir, *owner)
            os.chown(pwfile, *owner)
        user_args: dict[str, int] = {} if owner is None else {"user": owner[0], "group": owner[1]}
        try:
            init = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                cwd=workdir,
                timeout=120,
                **user_args,  # type: ignore[call-overload]
            )
            if init.returncode != 0:
                raise ServiceUnavailable(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
            pwfile.unlink()
            server_settings = {
                "listen_addresses": "127.0.0.1",
                "unix_socket_directories": str(workdir),
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "shared_buffers": "128MB",
                "max_connections": "50",
                "timezone": "UTC",
                **(settings or {}),
            }
            args = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port)]
            for key, value in server_settings.items():
                args += ["-c", f"{key}={value}"]
            log = self.log_path.open("wb")
            if owner is not None:
                os.chown(self.log_path, *owner)
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, **user_args)  # type: ignore[call-overload]
            wait_for_port(self.port, self.process, "PostgreSQL")
            self._create_database(bin_dir, user_args)
        except BaseException:
            self.stop()
            raise
        return self

    def _create_database(self, bin_dir: Path, user_args: dict[str, int]) -> None:
        """Create the test database once the server accepts connections (it may still be starting)."""
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(
                [
                    str(bin_dir / "psql"),
                    "-h",
                    str(self.workdir),
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qAtc",
                    f'CREATE DATABASE "{self.database}"',
                ],
                capture_output=True,
                text=True,
                timeout=60,
                **user_args,  # type: ignore[call-overload]
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline or "starting up" not in result.stderr:
                raise ServiceUnavailable(f"cannot create the test database: {result.stderr.strip()}")
            time.sleep(0.2)

    def uri(self, *, password: str | None = None, database: str | None = None) -> str:
        """A `postgresql://` URI for a client (the password may be overridden to test failures)."""
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@127.0.0.1:{self.port}/{database or self.database}"

    def execute(self, *statements: str) -> None:
        """Run SQL statements as the test superuser (autocommit), e.g. to create test tables."""
        import adbc_driver_postgresql.dbapi

        with (
            adbc_driver_postgresql.dbapi.connect(self.uri(), autocommit=True) as connection,
            connection.cursor() as cursor,
        ):
            for statement in statements:
                cursor.execute(statement)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients, no waiting
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)


# The demo's customers (examples/make_demo.py) in PostgreSQL: what breaks naive exporters (commas,
# quotes, line breaks, accents, NULLs, decimals, dates, zoned timestamps), at any size.
CUSTOMERS_SQL = """
CREATE TABLE {table} AS
WITH first_names(i, name) AS (VALUES (0, 'Zoé'), (1, 'François'), (2, 'Ana María'), (3, 'O''Brien'),
      (4, 'Jürgen'), (5, 'Li'), (6, 'Åsa'), (7, 'Chloé "Coco"'), (8, 'Søren'), (9, 'Renée')),
     last_names(i, name) AS (VALUES (0, 'Dupont'), (1, 'Martin, Jr.'), (2, 'Nguyễn'), (3, 'Müller'),
      (4, 'García'), (5, 'Smith'), (6, 'Łukasiewicz'), (7, 'D''Angelo'), (8, 'Ødegaard'), (9, 'Brontë')),
     countries(i, code) AS (VALUES (0, 'FR'), (1, 'FR'), (2, 'DE'), (3, 'ES'), (4, 'GB'), (5, 'US'), (6, 'IT'),
      (7, 'NL'), (8, 'BE'), (9, 'SE'))
SELECT
    g.i::int4                                                 AS customer_id,
    f.name                                                    AS first_name,
    l.name                                                    AS last_name,
    lower(replace(f.name, ' ', '.')) || '.' || g.i || '@example.com' AS email,
    CASE WHEN g.i % 7 = 0 THEN NULL ELSE '+33 6 ' || lpad((g.i * 7919 % 100000000)::text, 8, '0') END
                                                              AS phone,
    (18 + (g.i * 37) % 70)::int2                              AS age,
    c.code                                                    AS country,
    CASE (g.i % 4) WHEN 0 THEN 'free' WHEN 1 THEN 'pro' WHEN 2 THEN 'team' ELSE 'enterprise' END AS plan,
    (g.i % 11 = 0)                                            AS vip,
    (CASE WHEN g.i % 13 = 0 THEN NULL ELSE ((g.i * 7907) % 1000000) / 100.0 END)::numeric(12, 2)
                                                              AS lifetime_value,
    DATE '2015-01-01' + ((g.i * 13) % 3650)::int4             AS signup_date,
    TIMESTAMPTZ '2024-01-01 00:00:00+00' + make_interval(secs => (g.i * 7727) % 31536000) AS last_seen_at,
    CASE WHEN g.i % 5 = 0 THEN 'Note: likes "quotes", commas; and' || chr(10) || 'new lines'
         WHEN g.i % 5 = 1 THEN '<b>VIP</b> & friends'
         WHEN g.i % 5 = 2 THEN NULL ELSE '' END                AS notes,
    g.i % 3 <> 0                                              AS is_active
FROM generate_series(1::int8, {rows}) AS g(i)
JOIN first_names f ON f.i = g.i % 10
JOIN last_names l ON l.i = (g.i / 10) % 10
JOIN countries c ON c.i = (g.i / 100) % 10
ORDER BY customer_id
"""


def create_customers(server: PostgresServer, table: str = "customers", rows: int = 100_000) -> None:
    server.execute(
        CUSTOMERS_SQL.format(table=table, rows=int(rows)),
        f"ALTER TABLE {table} ADD PRIMARY KEY (customer_id)",
        f"ANALYZE {table}",
    )


def main() -> None:
    with PostgresServer.start() as server:
        print(server.uri(), flush=True)
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
