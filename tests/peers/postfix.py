"""A private Postfix 3.7 instance for tests: an SMTP peer on 127.0.0.1 and a real DSN generator.

``postfix -c DIR/etc start`` with its own main.cf/master.cf; queue, data, logs and the local
mail spool live under the instance directory. DNS is off and every domain without an explicit
route goes to an ``error:`` transport, so nothing is ever looked up or sent off the machine.

Routing (all via ``transport_maps``, a texthash file, plus ``mydestination``):

* ``bounce_domain`` (default ``bounces.test``) -> ``smtp:[127.0.0.1]:bounce_port``: DSNs for a
  VERP sender on that domain are delivered to a listener on ``bounce_port``.
* ``local_domain`` (default ``local.test``) is in ``mydestination``: unknown users are accepted
  in the SMTP session (``smtpd_reject_unlisted_recipient = no``) and then bounced by local(8)
  ("unknown user", status 5.1.1): a real failed DSN within ~50 ms.
* ``reject_domain`` (default ``reject.test``) -> ``error:5.7.1 ...``: immediate failed DSN.
* ``defer_domain`` (default ``defer.test``) -> ``retry:4.4.1 ...``: deferred and retried every
  second; measured here with the defaults (``delay_warning_s=1``, ``queue_lifetime_s=4``): a
  "delayed" DSN (``Action: delayed``, 4.4.1) within ~50 ms (the 1 s warning time is already
  due at the first deferral) and a failed DSN (``Action: failed``, status 4.4.1: classify by
  Action) after ~4 s. ``queue_lifetime_s=0`` means a single attempt, then a failed DSN.
* everything else -> ``error:5.4.4 ...`` (failed DSN to the sender).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.peers.ports import (
    LOOPBACK,
    free_port,
    process_group_alive,
    process_group_members,
    wait_for_greeting,
    wait_port_closed,
    wait_until,
)

POSTFIX_BIN = "postfix"
DEBIAN_PACKAGE = "postfix"

_MAIN_CF = """\
# mailgate test peer: private Postfix instance (generated, do not edit)
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_spool_directory = {d}/spool/
maillog_file = {d}/log/postfix.log
maillog_file_prefixes = {d}/log
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {hostname}
myorigin = {hostname}
mydestination = {local_domain}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_bind_address = 127.0.0.1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_reject_unlisted_recipient = no
smtpd_reject_unlisted_sender = no
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtputf8_enable = yes
message_size_limit = 52428800
mailbox_size_limit = 0
bounce_template_file = {d}/etc/bounce.cf
disable_dns_lookups = yes
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
transport_maps = texthash:{d}/etc/transport
default_transport = error:5.4.4 mailgate test peer never sends off this machine
relay_transport = error:5.4.4 mailgate test peer never relays
notify_classes =
delay_warning_time = {delay_warning_s}s
maximal_queue_lifetime = {queue_lifetime_s}s
bounce_queue_lifetime = {queue_lifetime_s}s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 1s
smtp_connect_timeout = 5s
smtp_helo_timeout = 10s
in_flow_delay = 0
"""

_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


# The built-in delay template speaks in hours and days, which are 0 with second-long timers.
_BOUNCE_CF = """\
delay_template = <<EOF
Charset: us-ascii
From: MAILER-DAEMON (Mail Delivery System)
Subject: Delayed Mail (still being retried)
Postmaster-Subject: Postmaster Warning: Delayed Mail

This is the mail system at host $myhostname.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than $delay_warning_time_seconds second(s).
It will be retried until it is $maximal_queue_lifetime_seconds second(s) old.

                   The mail system
EOF
"""

_QUEUE_DIRS = [
    *(
        (name, "root", 0o700)
        for name in (
            "active",
            "bounce",
            "corrupt",
            "defer",
            "deferred",
            "flush",
            "hold",
            "incoming",
            "private",
            "saved",
            "trace",
        )
    ),
    ("maildrop", "postdrop", 0o730),
    ("public", "postdrop", 0o710),
    ("pid", "root", 0o755),
]


class PostfixError(RuntimeError):
    """The private Postfix instance failed to start or stop."""


class Postfix:
    """A private Postfix 3.7 instance with smtpd on ``127.0.0.1:port`` under ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        bounce_domain: str = "bounces.test",
        bounce_port: int | None = None,
        local_domain: str = "local.test",
        reject_domain: str = "reject.test",
        reject_reply: str = "5.7.1 Message rejected by recipient policy",
        defer_domain: str = "defer.test",
        defer_reply: str = "4.4.1 Connection timed out (simulated)",
        delay_warning_s: int = 1,
        queue_lifetime_s: int = 4,
        extra_transports: dict[str, str] | None = None,
        hostname: str = "mx.postfix-peer.test",
        fast_start: bool = True,
        postconf_lines: list[str] | None = None,
    ) -> None:
        """``postconf_lines``: main.cf settings applied with ``postconf -e`` after the peer's
        own (the way Mailu applies its overrides/postfix.cf)."""
        if shutil.which(POSTFIX_BIN) is None:
            raise PostfixError(f"postfix not found: apt-get install {DEBIAN_PACKAGE}")
        self.dir = Path(directory).resolve()
        self.host = LOOPBACK
        self.port = port or free_port()
        self.bounce_domain = bounce_domain
        self.bounce_port = bounce_port
        self.local_domain = local_domain
        self.reject_domain = reject_domain
        self.defer_domain = defer_domain
        self.hostname = hostname
        self.fast_start = fast_start
        self.postconf_lines = list(postconf_lines or [])
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "queue"
        self.log_path = self.dir / "log" / "postfix.log"
        self._delay_warning_s = delay_warning_s
        self._queue_lifetime_s = queue_lifetime_s
        self._transports: dict[str, str] = {
            local_domain: "local:",
            reject_domain: f"error:{reject_reply}",
            defer_domain: f"retry:{defer_reply}",
        }
        if bounce_port is not None:
            self._transports[bounce_domain] = f"smtp:[127.0.0.1]:{bounce_port}"
        self._transports.update(extra_transports or {})
        self._pgid: int | None = None

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [POSTFIX_BIN, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and res.returncode != 0:
            raise PostfixError(
                f"postfix {' '.join(args)} failed ({res.returncode}): "
                f"{res.stdout.strip()} {res.stderr.strip()}\n{self.log_tail()}"
            )
        return res

    def _prepare(self) -> None:
        pf = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        for sub in ("etc", "queue", "data", "log", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
            (self.dir / sub).chmod(0o755)
        self.dir.chmod(0o755)
        os.chown(self.dir / "data", pf.pw_uid, pf.pw_gid)
        (self.dir / "data").chmod(0o700)
        (self.dir / "spool").chmod(0o1777)
        # The queue layout of /etc/postfix/postfix-files, made here (~1 ms) so that the fast
        # start below does not depend on `postfix check` (~2.2 s on a fresh instance).
        for name, gid, mode in _QUEUE_DIRS:
            path = self.queue_dir / name
            path.mkdir(exist_ok=True)
            if name != "pid":
                os.chown(path, pf.pw_uid, postdrop if gid == "postdrop" else 0)
            path.chmod(mode)
        (self.config_dir / "main.cf").write_text(
            _MAIN_CF.format(
                d=self.dir,
                hostname=self.hostname,
                local_domain=self.local_domain,
                delay_warning_s=self._delay_warning_s,
                queue_lifetime_s=self._queue_lifetime_s,
            )
        )
        (self.config_dir / "bounce.cf").write_text(_BOUNCE_CF)
        (self.config_dir / "master.cf").write_text(_MASTER_CF.format(port=self.port))
        self.write_transports()
        for line in self.postconf_lines:
            subprocess.run(
                ["postconf", "-c", str(self.config_dir), "-e", line],
                check=True,
                capture_output=True,
                timeout=30,
            )
        # Postfix programs refuse to read a main.cf younger than ~2 s: they sleep in 300 ms
        # steps until it has aged (1.5-2.4 s on every fresh start). Backdate the files.
        past = time.time() - 10
        for path in self.config_dir.iterdir():
            os.utime(path, (past, past))

    def write_transports(self) -> None:
        """(Re)write the transport table; a running Postfix picks texthash up on ``reload()``."""
        (self.config_dir / "transport").write_text(
            "".join(f"{dom} {route}\n" for dom, route in self._transports.items())
        )

    def set_transport(self, domain: str, route: str) -> None:
        """Route ``domain`` (e.g. to ``smtp:[127.0.0.1]:PORT``); reloads if running."""
        self._transports[domain] = route
        self.write_transports()
        if self.running:
            self.reload()

    # ---------------------------------------------------------------- process
    def master_pid(self) -> int | None:
        """PID of this instance's master process, or None."""
        pid_file = self.queue_dir / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # A master that exited may linger as a zombie until its new parent reaps it.
        return pid if pid in process_group_members(pid) else None

    @property
    def running(self) -> bool:
        """True while this instance's master process is alive."""
        return self.master_pid() is not None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the master; return once smtpd greets with ``220``.

        ``fast_start`` (default) runs ``$daemon_directory/master -c DIR/etc -w`` directly, which
        is what ``postfix -c DIR/etc start`` runs after its checks: ~20 ms to the 220 greeting.
        ``fast_start=False`` runs ``postfix -c DIR/etc start`` itself: ~150 ms. (The ~2.3 s
        "fresh start" seen before was Postfix waiting for a just-written main.cf to age; the
        config files are backdated in ``_prepare``.)
        """
        if self.running:
            return
        self._prepare()
        if self.fast_start:
            # What `postfix start` ends with, minus its checks: on a fresh instance its
            # `master -t` probe alone takes ~2.4 s, the master itself is up in ~10 ms.
            daemon_dir = subprocess.run(
                ["postconf", "-c", str(self.config_dir), "-h", "daemon_directory"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            res = subprocess.run(
                [f"{daemon_dir}/master", "-c", str(self.config_dir), "-w"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if res.returncode != 0:
                raise PostfixError(
                    f"postfix master -w failed ({res.returncode}): {res.stderr.strip()}\n"
                    f"{self.log_tail()}"
                )
        else:
            self._postfix("start")
        try:
            wait_for_greeting(self.host, self.port, b"220", timeout_s)
        except Exception as exc:
            self.stop()
            raise PostfixError(f"postfix did not start: {exc}\n{self.log_tail()}") from exc
        self._pgid = self.master_pid()

    def reload(self) -> None:
        """``postfix reload`` (re-reads main.cf, master.cf and texthash tables)."""
        self._postfix("reload")

    def stop(self, timeout_s: float = 15.0) -> None:
        """``postfix stop``; return once the master and all its children are gone."""
        pid = self.master_pid()
        if pid is None:
            return
        # The master is a process-group leader (it calls setsid); its children stay in it.
        self._postfix("stop", check=False)
        try:
            wait_until(lambda: not process_group_alive(pid), timeout_s, "postfix to exit")
        except TimeoutError:
            self._postfix("abort", check=False)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_until(lambda: not process_group_alive(pid), timeout_s, "postfix to abort")
        wait_port_closed(self.host, self.port, timeout_s)
        self._pgid = None

    def leftover_processes(self) -> list[int]:
        """PIDs of this instance still alive (its master's process group); [] when stopped."""
        return process_group_members(self._pgid) if self._pgid is not None else []

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the Postfix log."""
        if not self.log_path.exists():
            return "(no postfix log yet)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def queue_ids(self) -> list[str]:
        """Queue ids of messages currently queued (via postqueue -j)."""
        res = subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            check=False,
        )
        ids = []
        for line in res.stdout.splitlines():
            key = '"queue_id": "'
            if key in line:
                ids.append(line.split(key, 1)[1].split('"', 1)[0])
        return ids

    def wait_for_log(self, needle: str, timeout_s: float = 10.0) -> str:
        """Bounded polling until a log line contains ``needle``; return that line."""
        found: list[str] = []

        def seen() -> bool:
            if self.log_path.exists():
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if needle in line:
                        found.append(line)
                        return True
            return False

        wait_until(seen, timeout_s, f"{needle!r} in {self.log_path}", interval_s=0.05)
        return found[0]
