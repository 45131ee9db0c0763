"""A throwaway, real PostgreSQL server for the test run.

Tests marked ``postgres`` run the same schema and queries as production against
the Debian ``postgresql`` package's own binaries; nothing is mocked. The server
lives in a temporary directory, listens on 127.0.0.1 and a private unix-socket
directory only, and is stopped and deleted afterwards.

``initdb`` and ``postgres`` refuse to run as root, so when we are root they run as
the unprivileged system user ``hotline-pg`` (created on first use) through
``runuser``; as an ordinary user they simply run as that user.

Session fixture for ``tests/conftest.py`` (one server for the whole run)::

    from tests.support.postgres import postgres_server

    @pytest.fixture(scope="session")
    def postgres_url() -> Iterator[str]:
        with postgres_server() as url:
            yield url

A test module can use it directly with a module-scoped fixture the same way.
Missing binaries raise `PostgresUnavailable` (no skip: CI installs PostgreSQL).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

SERVICE_USER = "hotline-pg"
DB_NAME = "hotline"
DB_USER = "hotline"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries are not installed or the server would not start."""


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path

    def path(self, name: str) -> str:
        return str(self.bindir / name)


def find_binaries() -> PgBinaries:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has everything we run."""
    needed = ("initdb", "postgres", "pg_ctl", "pg_isready", "createdb")

    def major(bindir: str) -> int:
        match = re.search(r"/postgresql/(\d+)", bindir)
        return int(match.group(1)) if match else -1

    override = os.environ.get("HOTLINE_PG_BINDIR")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, name), os.X_OK) for name in needed):
            return PgBinaries(Path(bindir))
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
        f"(need {', '.join(needed)}); install them with: apt-get install postgresql"
    )


def _service_account() -> pwd.struct_passwd | None:
    """The account the server runs as: ``hotline-pg`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", SERVICE_USER],
        check=False, capture_output=True, text=True,
    )
    try:  # a parallel run may have created it first: only the end state matters
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresUnavailable(f"could not create the system user {SERVICE_USER!r} for PostgreSQL") from None


def _as_service(account: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    return argv if account is None else ["runuser", "-u", account.pw_name, "--", *argv]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], *, cwd: Path, what: str, timeout: float = 120) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private PostgreSQL server; yield a SQLAlchemy URL to its empty ``hotline`` database."""
    bins = find_binaries()
    account = _service_account()
    tmp = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
    server: subprocess.Popen[bytes] | None = None
    datadir = tmp / "data"
    try:
        if account is not None:
            os.chown(tmp, account.pw_uid, account.pw_gid)
        password = secrets.token_urlsafe(16)
        pwfile = tmp / "pwfile"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)
        # Local socket: trust (only this user can reach the private socket dir);
        # TCP: a real password, the way the service connects in production.
        _run(_as_service(account, [
            bins.path("initdb"), "-D", str(datadir), "-U", DB_USER, "--encoding=UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync",
        ]), cwd=tmp, what="initdb")
        pwfile.unlink()

        log = tmp / "server.log"
        for _attempt in range(3):  # the free port can be taken between probe and bind
            port = _free_port()
            server, ready = _start(bins, account, tmp, datadir, port, log)
            if ready:
                break
            server = None
        else:
            raise PostgresUnavailable(f"PostgreSQL did not start; server log:\n{_log_tail(log)}")

        _run([bins.path("createdb"), "-h", str(tmp), "-p", str(port), "-U", DB_USER,
              "-E", "UTF8", "-T", "template0", DB_NAME], cwd=tmp, what="createdb")
        yield URL.create(
            "postgresql+psycopg2", username=DB_USER, password=password,
            host="127.0.0.1", port=port, database=DB_NAME,
        ).render_as_string(hide_password=False)
    finally:
        if server is not None:
            _stop(bins, account, tmp, datadir, server)
        shutil.rmtree(tmp, ignore_errors=True)


def _start(
    bins: PgBinaries, account: pwd.struct_passwd | None, tmp: Path, datadir: Path, port: int, log: Path
) -> tuple[subprocess.Popen[bytes], bool]:
    """Run the postmaster in the foreground of our child, poll until it answers or dies."""
    with log.open("ab") as log_fh:
        server = subprocess.Popen(
            _as_service(account, [
                bins.path("postgres"), "-D", str(datadir), "-p", str(port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={tmp}",
                # Durability is worthless for a throwaway test database; speed is not.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "logging_collector=off",
            ]),
            cwd=tmp, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on pytest must not kill it before we stop it cleanly
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return server, False
        probe = subprocess.run(
            [bins.path("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-d", "postgres", "-t", "2"],
            cwd=tmp, check=False,
        )
        if probe.returncode == 0:
            return server, True
        time.sleep(0.05)  # poll interval, not a guess at the startup time
    _kill(server, datadir)
    raise PostgresUnavailable(f"PostgreSQL not ready after {STARTUP_TIMEOUT:.0f} s; log:\n{_log_tail(log)}")


def _stop(
    bins: PgBinaries, account: pwd.struct_passwd | None, tmp: Path, datadir: Path, server: subprocess.Popen[bytes]
) -> None:
    """``pg_ctl stop -m fast``; by pid (postmaster, then our child) if that does not work."""
    try:
        subprocess.run(
            _as_service(account, [bins.path("pg_ctl"), "stop", "-D", str(datadir), "-m", "fast",
                                  "-w", "-t", str(int(STOP_TIMEOUT))]),
            cwd=tmp, capture_output=True, check=False, timeout=STOP_TIMEOUT + 10,
        )
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _kill(server, datadir)


def _kill(server: subprocess.Popen[bytes], datadir: Path) -> None:
    pid = _postmaster_pid(datadir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown; the postmaster takes its children along
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        server.kill()
        server.wait(timeout=10)
