"""A private Dovecot 2.3 instance for tests: plaintext IMAP on 127.0.0.1, Maildir, master user.

Everything (config, sockets, state, logs, mail) lives under the instance directory. The master
runs in the foreground (``dovecot -F``) in its own session, so ``stop()`` can signal the whole
process group and nothing is left behind.

UIDVALIDITY changes use ``doveadm mailbox update --uid-validity`` (messages and UIDs are kept,
only the mailbox's UIDVALIDITY changes; new sessions see the new value in STATUS/SELECT). A
session that has the folder selected (even in IDLE) gets no push; its next command is answered
``* BYE IMAP session state is inconsistent, please relogin.`` and the connection closes.
``recreate_folder()`` is the destructive alternative (delete and create: new UIDVALIDITY, no
messages).

Many sessions: ``service_count = 0`` with ``client_limit = 50`` per imap process (up to 200
processes) keeps the inotify instances per uid far below the kernel's 128; checked here with
1,200 IDLE sessions on 1,200 mailboxes (31 processes): every session got its EXISTS push.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.peers.ports import (
    LOOPBACK,
    free_port,
    process_group_alive,
    wait_for_greeting,
    wait_port_closed,
    wait_until,
)

MAIL_UID = 5000
MAIL_GID = 5000
DOVECOT_BIN = "dovecot"
DOVEADM_BIN = "doveadm"
DEBIAN_PACKAGES = "dovecot-imapd dovecot-lmtpd"

_CONF = """\
# mailgate test peer: private Dovecot instance (generated, do not edit)
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log/dovecot.log
info_log_path = {d}/log/dovecot.log
instance_name = mailgate-dovecot-{tag}
protocols = {protocols}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
auth_master_user_separator = *
default_internal_user = dovecot
default_login_user = dovenull
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 10000
default_client_limit = 20000
default_process_limit = 1000
default_vsz_limit = 1G

{master_passdb}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/etc/users.d/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/etc/users.d/%u
  default_fields = uid={uid} gid={gid}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  client_limit = 5000
  process_min_avail = 1
}}
service imap {{
  service_count = 0
  client_limit = 50
  process_limit = 200
}}
protocol imap {{
  mail_max_userip_connections = 10000
}}
{lmtp_conf}"""

# LMTP delivery with Sieve (``lmtp=True``): a real MTA (Postfix's lmtp client) delivers into
# the mailboxes and each user's ``~/.dovecot.sieve`` may file mail elsewhere (a spam filter's
# verdict: ``fileinto "Junk"``). Every user has a Junk folder marked SPECIAL-USE \Junk.
_LMTP_CONF = """
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@peers.test
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
namespace inbox {{
  inbox = yes
  mailbox Junk {{
    special_use = \\Junk
    auto = create
  }}
}}
"""


# The peer's own master user (replaced by ``master_conf`` when a test brings its own lines).
_MASTER_PASSDB = """\
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/etc/master-users
  master = yes
  pass = yes
}}"""


class DovecotError(RuntimeError):
    """The private Dovecot instance failed to start, stop or run a command."""


class Dovecot:
    """A private Dovecot 2.3 IMAP server on ``127.0.0.1:port`` under ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        master_user: str = "gateway",
        master_password: str | None = None,
        mail_uid: int = MAIL_UID,
        mail_gid: int = MAIL_GID,
        master_conf: str | None = None,
        lmtp: bool = False,
    ) -> None:
        """``master_conf``: configuration text that replaces the peer's own master-user
        passdb (e.g. the Mailu recipe's lines; the test writes the file they name).
        ``lmtp``: also listen for LMTP on ``lmtp_port`` and run users' Sieve scripts
        (:meth:`set_sieve`); every user then has a SPECIAL-USE ``\\Junk`` folder."""
        for binary in (DOVECOT_BIN, DOVEADM_BIN):
            if shutil.which(binary) is None:
                raise DovecotError(f"{binary} not found: apt-get install {DEBIAN_PACKAGES}")
        self.dir = Path(directory).resolve()
        self.host = LOOPBACK
        self.port = port or free_port()
        self.master_user = master_user
        self.master_password = master_password or secrets.token_hex(8)
        self.mail_uid = mail_uid
        self.mail_gid = mail_gid
        self.master_conf = master_conf
        self.lmtp = lmtp
        self.lmtp_port = free_port() if lmtp else None
        self.conf_path = self.dir / "etc" / "dovecot.conf"
        self.log_path = self.dir / "log" / "dovecot.log"
        self.users_dir = self.dir / "etc" / "users.d"
        self.probe_user = "probe@peers.test"
        self.probe_password = secrets.token_hex(8)
        self._users: dict[str, str] = {}
        self._users_mtime = 0
        self._looked_up: set[str] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # ----------------------------------------------------------------- layout
    def _prepare(self) -> None:
        if self._prepared:
            return
        for sub in ("etc", "run", "state", "log", "mail"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # Dovecot's unprivileged processes must traverse the instance directory.
        self.dir.chmod(0o755)
        for sub in ("etc", "run", "state", "log"):
            (self.dir / sub).chmod(0o755)
        os.chown(self.dir / "mail", self.mail_uid, self.mail_gid)
        (self.dir / "mail").chmod(0o750)
        self.conf_path.write_text(
            _CONF.format(
                d=self.dir,
                port=self.port,
                uid=self.mail_uid,
                gid=self.mail_gid,
                tag=secrets.token_hex(4),
                protocols="imap lmtp" if self.lmtp else "imap",
                lmtp_conf=_LMTP_CONF.format(lmtp_port=self.lmtp_port) if self.lmtp else "",
                master_passdb=(
                    self.master_conf
                    if self.master_conf is not None
                    else _MASTER_PASSDB.format(d=self.dir)
                ),
            )
        )
        (self.dir / "etc" / "master-users").write_text(
            f"{self.master_user}:{{PLAIN}}{self.master_password}::::::\n"
        )
        self.users_dir.mkdir(exist_ok=True)
        self.users_dir.chmod(0o755)
        self._prepared = True
        for address, password in {self.probe_user: self.probe_password, **self._users}.items():
            self._write_user(address, password)
        self._users.setdefault(self.probe_user, self.probe_password)

    def home(self, address: str) -> Path:
        """The user's home directory (its Maildir is ``home/Maildir``)."""
        local, _, domain = address.partition("@")
        return self.dir / "mail" / (domain or "_") / local

    def _write_user(self, address: str, password: str) -> None:
        home = self.home(address)
        for path in (home.parent, home):
            path.mkdir(exist_ok=True)
            os.chown(path, self.mail_uid, self.mail_gid)
        line = f"{address}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{home}::\n"
        target = self.users_dir / address
        tmp = self.users_dir / f".{address}.tmp"
        tmp.write_text(line)
        tmp.chmod(0o644)
        # Dovecot re-reads a passwd-file when its mtime (seconds) or size changed: give every
        # version a distinct mtime.
        self._users_mtime = max(int(time.time()), self._users_mtime + 1)
        os.utime(tmp, (self._users_mtime, self._users_mtime))
        os.replace(tmp, target)

    def set_sieve(self, address: str, script: str) -> None:
        """The user's active Sieve script (LMTP deliveries run it), e.g.
        ``require "fileinto"; fileinto "Junk";`` to file all their mail as spam."""
        self._prepare()
        home = self.home(address)
        for path in (home.parent, home):
            path.mkdir(exist_ok=True)
            os.chown(path, self.mail_uid, self.mail_gid)
        target = home / ".dovecot.sieve"
        target.write_text(script)
        os.chown(target, self.mail_uid, self.mail_gid)
        target.chmod(0o644)

    @property
    def users(self) -> dict[str, str]:
        """Mailbox address -> password of every user added so far."""
        return dict(self._users)

    def add_user(self, address: str, password: str) -> None:
        """Add (or change) a mailbox; works while the server runs, see ``add_users``."""
        self.add_users({address: password})

    def add_users(self, users: dict[str, str]) -> None:
        """Add (or change the password of) mailboxes; works while the server runs.

        Each user has its own passwd-file (``etc/users.d/ADDRESS``, a ``%u`` path in the
        passdb/userdb args), so a new user is read fresh on its first lookup: no wait. Dovecot
        re-stats a passwd-file it already knows at most once per wall-clock second, so when an
        existing user's password changes (or a login was tried before the user existed) while
        running, this returns only once the next second has begun (at most ~1 s).
        """
        for address, password in users.items():
            for text in (address, password):
                if not text or any(c in text for c in ':\n\r\0*"/ '):
                    raise ValueError(f"unsupported character in {text!r}")
        self._prepare()
        must_wait = False
        written = time.time()
        for address, password in users.items():
            # A file Dovecot may have looked up already (even as missing) is cached per second.
            must_wait |= address in self._users or address in self._looked_up
            self._users[address] = password
            self._write_user(address, password)
        if must_wait and self.running:
            time.sleep(max(0.0, int(written) + 1 - time.time()) + 0.01)

    # ---------------------------------------------------------------- process
    @property
    def running(self) -> bool:
        """True while the Dovecot master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the master; return once the ``* OK`` greeting arrives and a test login works."""
        if self.running:
            return
        self._prepare()
        log = (self.dir / "log" / "master.stderr").open("ab")
        try:
            self._proc = subprocess.Popen(
                [DOVECOT_BIN, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            wait_for_greeting(self.host, self.port, b"* OK", timeout_s, alive=lambda: self.running)
            deadline = time.monotonic() + timeout_s
            while True:
                reply = self.imap_login_reply(self.probe_user, self.probe_password)
                if reply.startswith(b"a OK"):
                    break
                if time.monotonic() > deadline or not self.running:
                    raise DovecotError(f"probe login failed: {reply!r}")
                time.sleep(0.05)
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise DovecotError(f"dovecot did not start: {exc}\n--- log tail ---\n{tail}") from exc

    def stop(self, timeout_s: float = 10.0) -> None:
        """Signal the master's process group; return when the port is closed and all are gone."""
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
        try:
            wait_until(
                lambda: not process_group_alive(pgid), timeout_s, "dovecot processes to exit"
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            wait_until(lambda: not process_group_alive(pgid), timeout_s, "dovecot processes (KILL)")
        self._proc = None
        wait_port_closed(self.host, self.port, timeout_s)

    def restart(self) -> None:
        """Stop and start again: same data, same port."""
        self.stop()
        self.start()

    @property
    def pgid(self) -> int | None:
        """The process group of the master and all its children (None when stopped)."""
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the Dovecot log (for error messages)."""
        parts = []
        for path in (self.log_path, self.dir / "log" / "master.stderr"):
            if path.exists():
                parts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(parts)

    # ------------------------------------------------------------------- IMAP
    def master_login_name(self, address: str) -> str:
        """The login name that authenticates as ``address`` with the master password."""
        return f"{address}*{self.master_user}"

    def imap_login_reply(
        self, user: str, password: str, *, source: str | None = None, timeout_s: float = 5.0
    ) -> bytes:
        """Open a plain IMAP session, try LOGIN and return the tagged reply line."""
        self._looked_up.add(user.split("*", 1)[0])
        src = (source, 0) if source else None
        with (
            socket.create_connection(
                (self.host, self.port), timeout=timeout_s, source_address=src
            ) as sock,
            sock.makefile("rwb") as f,
        ):
            f.readline()
            f.write(b'a LOGIN "' + user.encode() + b'" "' + password.encode() + b'"\r\n')
            f.flush()
            while True:
                line = f.readline()
                if not line or line.startswith(b"a "):
                    break
            with contextlib.suppress(OSError):
                f.write(b"b LOGOUT\r\n")
                f.flush()
            return line.rstrip(b"\r\n")

    # ---------------------------------------------------------------- doveadm
    def doveadm(self, *args: str, input_bytes: bytes | None = None) -> str:
        """Run ``doveadm -c CONF ARGS``; return stdout, raise ``DovecotError`` on failure."""
        self._prepare()
        res = subprocess.run(
            [DOVEADM_BIN, "-c", str(self.conf_path), *args],
            input=input_bytes,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if res.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed ({res.returncode}): "
                f"{res.stderr.decode(errors='replace').strip()}"
            )
        return res.stdout.decode(errors="replace")

    def create_folder(self, address: str, folder: str) -> None:
        """Create a mailbox folder (no error if it exists)."""
        if folder.upper() == "INBOX" or folder in self.folders(address):
            return
        self.doveadm("mailbox", "create", "-u", address, folder)

    def folders(self, address: str) -> list[str]:
        """The user's mailbox folders."""
        return self.doveadm("mailbox", "list", "-u", address).split()

    def deliver(self, address: str, raw: bytes, folder: str = "INBOX") -> None:
        """Store a raw message in the user's folder (``doveadm save``, ~15 ms; creates folder)."""
        try:
            self.doveadm("save", "-u", address, "-m", folder, input_bytes=raw)
        except DovecotError:
            if folder.upper() == "INBOX":
                raise
            self.create_folder(address, folder)
            self.doveadm("save", "-u", address, "-m", folder, input_bytes=raw)

    def status(self, address: str, folder: str = "INBOX") -> dict[str, int]:
        """messages/uidnext/uidvalidity/unseen of a folder as Dovecot sees it (via doveadm)."""
        out = self.doveadm(
            "-f",
            "flow",
            "mailbox",
            "status",
            "-u",
            address,
            "messages uidnext uidvalidity unseen",
            folder,
        )
        result: dict[str, int] = {}
        for item in out.split():
            key, _, value = item.partition("=")
            if value.isdigit():
                result[key] = int(value)
        return result

    def uidvalidity(self, address: str, folder: str = "INBOX") -> int:
        """The folder's current UIDVALIDITY."""
        return self.status(address, folder)["uidvalidity"]

    def change_uidvalidity(
        self, address: str, folder: str = "INBOX", new_value: int | None = None
    ) -> int:
        """Give a folder a new UIDVALIDITY (messages kept); return the new value.

        Uses ``doveadm mailbox update --uid-validity``. IMAP sessions that have the folder
        selected see the change (Dovecot disconnects them), new sessions see the new value.
        """
        old = self.uidvalidity(address, folder)
        value = new_value if new_value is not None else old + 1
        if value == old or not 0 < value < 2**32:
            raise ValueError(f"new UIDVALIDITY {value} must differ from {old} and fit 32 bits")
        self.doveadm("mailbox", "update", "-u", address, "--uid-validity", str(value), folder)
        got = self.uidvalidity(address, folder)
        if got != value:
            raise DovecotError(f"UIDVALIDITY of {folder} is {got}, expected {value}")
        return value

    def recreate_folder(self, address: str, folder: str) -> int:
        """Delete and (re)create a non-INBOX folder: messages gone, new UIDVALIDITY returned."""
        if folder.upper() == "INBOX":
            raise ValueError("INBOX cannot be deleted; use change_uidvalidity()")
        self.create_folder(address, folder)
        old = self.uidvalidity(address, folder)
        self.doveadm("mailbox", "delete", "-u", address, folder)
        self.doveadm("mailbox", "create", "-u", address, folder)
        new = self.uidvalidity(address, folder)
        if new == old:  # same second: force a different value
            new = self.change_uidvalidity(address, folder)
        return new
