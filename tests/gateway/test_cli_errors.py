"""Every mistake a user can make answers with one line, `mailgate: <what> (<how to fix>)`,
and a non-zero exit; a traceback only with --debug. Runs the real CLI in a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import App
from gateway.embedded import free_port
from gateway.settings import Settings
from tests.daemon import cli_argv, cli_env

BOUNCE = {"message_id": "<m@x>", "bounce_type": "hard", "recipient_email": "a@b.test"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single stderr line of a failure; checks the exit code and the words in it."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("mailgate: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return cli_env(settings, secret_key="c" * 40)


def test_version(env: dict[str, str]) -> None:
    """`mailgate --version` prints the installed version."""
    result = run(env, "--version")
    assert result.returncode == 0 and result.stdout.startswith("mailgate 0.")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("enqueue", "queue:nosuch", "{}"), ("unknown queue 'queue:nosuch'", "--list")),
        (("enqueue", "queue:bounce:process", "@/nonexistent/job.json"), ("cannot read",)),
        (("enqueue", "queue:bounce:process", "{oops"), ("not valid JSON",)),
        (("enqueue", "queue:bounce:process", "[1]"), ("must be a JSON object",)),
        (
            ("enqueue", "queue:bounce:process", json.dumps({**BOUNCE, "bounce_type": "HARDER"})),
            ("invalid bounce payload: bounce_type",),
        ),
        (
            ("enqueue", "queue:bounce:process", json.dumps({**BOUNCE, "recipent": "x"})),
            ("unknown payload field 'recipent'", "recipient_email"),
        ),
        (
            ("enqueue", "queue:email-sending", json.dumps({"recipient": "a@b.test"})),
            ("tenant_id or campaign_id is required",),
        ),
        (("enqueue",), ("give a queue and a job",)),
        (("dlq", "retry"), ("give a job id or --all",)),
        (("dlq", "purge"), ("add --yes",)),
        (("accounts", "add", "--tenant", "t", "--address", "a@b.test"), ("--imap-host",)),
        (
            ("accounts", "add", "--tenant", "t", "--address", "a@b.test", "--imap-host", "h"),
            ("--password-env VAR or --password-file FILE",),
        ),
        (
            (
                "accounts",
                "add",
                "--tenant",
                "t",
                "--address",
                "a@b.test",
                "--smtp-host",
                "h",
                "--smtp-password-file",
                "/nonexistent/pw",
            ),
            ("cannot read the SMTP password file /nonexistent/pw",),
        ),
        (("templates", "add", "--tenant", "t", "--id", "x"), ("--text and/or --html",)),
    ],
)
def test_input_mistakes_exit_2_with_one_line(
    env: dict[str, str], args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    """Bad queues, payloads, files and options: exit 2, one line naming the fix."""
    one_line(run(env, *args), 2, *needles)


def test_enqueue_to_a_queue_no_installed_handler_consumes(env: dict[str, str]) -> None:
    """Where a family's package is not installed, its queue is refused at enqueue (the job
    would only wait forever), naming where to look."""
    argv = cli_argv("enqueue", "queue:webhook:process", "{}", without_handlers=("webhook",))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=60)
    one_line(result, 2, "no installed handler consumes", "mailgate queues")


def test_accounts_add_without_any_endpoint_names_both_options(env: dict[str, str]) -> None:
    """An account with neither IMAP nor SMTP is refused naming both options."""
    one_line(
        run(env, "accounts", "add", "--tenant", "t", "--address", "a@b.test"),
        2,
        "--imap-host",
        "--smtp-host",
    )


@pytest.mark.parametrize(
    ("var", "value", "needles"),
    [
        ("MAILGATE_COMPONENTS", "wroker", ("unknown component 'wroker'", "worker")),
        ("MAILGATE_DATABASE_URL", "mysql://db/x", ("database_url", "postgresql://")),
        ("MAILGATE_DATABASE_URL", "postgresql://u:p@h:port/db", ("port is not a number",)),
        ("MAILGATE_REDIS_URL", "http://cache:6379", ("redis_url", "redis://")),
        ("MAILGATE_HTTP_LISTEN", "localhost", ("http_listen", "host:port")),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_settings_exit_2_in_check_config_and_run(
    env: dict[str, str], var: str, value: str, needles: tuple[str, ...], command: str
) -> None:
    """A bad setting is caught by check-config and by run alike, before anything starts."""
    one_line(run({**env, var: value}, command), 2, "invalid configuration", *needles)


def test_missing_config_file(env: dict[str, str]) -> None:
    """--config naming no file: exit 2, the path named."""
    one_line(run(env, "--config", "/nonexistent/m.toml", "queues"), 2, "/nonexistent/m.toml")


def test_unreachable_servers_exit_1_naming_the_setting(env: dict[str, str]) -> None:
    """PostgreSQL or Redis not listening, or refusing the password: one line with the
    address and the setting to check; no password in the line."""
    port = free_port()
    down = env | {"MAILGATE_DATABASE_URL": f"postgresql://u:s3cret@127.0.0.1:{port}/db"}
    line = one_line(run(down, "queues"), 1, f"PostgreSQL at 127.0.0.1:{port}/db")
    assert "connection refused" in line and "MAILGATE_DATABASE_URL" in line
    assert "s3cret" not in line
    redis_down = env | {"MAILGATE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    one_line(run(redis_down, "queues"), 1, "cannot connect to Redis", "MAILGATE_REDIS_URL")
    url = env["MAILGATE_DATABASE_URL"]
    scheme, _, rest = url.partition("://")
    wrong = f"{scheme}://postgres:wrong-password@{rest.rpartition('@')[2]}"
    one_line(run(env | {"MAILGATE_DATABASE_URL": wrong}, "queues"), 1, "refused the login")


def test_debug_shows_the_traceback(env: dict[str, str]) -> None:
    """--debug: the same failure raises with its traceback, for a bug report."""
    result = run(env, "--debug", "enqueue", "queue:nosuch", "{}")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "CliError: unknown queue" in result.stderr


async def test_send_from_an_account_without_smtp_names_the_fix(
    app: App, env: dict[str, str]
) -> None:
    """An account with no SMTP endpoint and no relay: the error names --smtp-host and
    MAILGATE_DELIVERY_RELAY."""
    await app.db.execute(
        "INSERT INTO email_accounts (id, tenant_id, address) VALUES ('a1', 't', 'a@b.test')"
    )
    result = run(env, "send", "--tenant", "t", "--account", "a1", "--to", "c@d.test", "--text", "x")
    one_line(result, 1, "has no SMTP endpoint", "--smtp-host", "MAILGATE_DELIVERY_RELAY")


async def test_pushed_job_with_a_bad_payload_is_dead_lettered_naming_the_field(
    app: App, env: dict[str, str]
) -> None:
    """A producer that LPUSHes past the CLI: the worker dead-letters the job with the field
    named, and never runs the handler."""
    bad = {"id": "b1", "payload": {**BOUNCE, "bounce_type": "HARDER"}}
    await app.redis.lpush("queue:bounce:process", json.dumps(bad))
    from gateway.jobs.handlers import HandlerSpec
    from gateway.jobs.worker import Worker

    ran: list[str] = []

    async def handler(job: object, payload: object) -> None:
        ran.append("ran")

    worker = Worker(app, {"bounce": HandlerSpec("bounce", handler)})
    await worker.start()
    try:
        await worker.run_until_empty()
    finally:
        await worker.stop(asyncio.get_running_loop().time() + 5)
    letters = [json.loads(x) for x in await app.redis.lrange("queue:dead", 0, -1)]
    assert [x["id"] for x in letters] == ["b1"] and ran == []
    assert "invalid bounce payload: bounce_type" in letters[0]["error"]


def test_output_piped_into_a_closed_reader_is_quiet(env: dict[str, str], tmp_path: Path) -> None:
    """`mailgate enqueue --list | head -1`: no BrokenPipe traceback."""
    result = subprocess.run(  # noqa: S602 - a fixed pipeline of our own command
        f"{sys.executable} -m gateway.cli enqueue --list | head -1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.stdout.startswith("email-processing") and "Traceback" not in result.stderr


class _Stream:
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        return None


def test_progress_bar_on_a_terminal_only() -> None:
    """The bar draws on a terminal (ending on the total) and writes nothing when piped."""
    from gateway.cli import Progress

    tty, pipe = _Stream(True), _Stream(False)
    for stream in (tty, pipe):
        bar = Progress(4, "working", stream=stream)  # type: ignore[arg-type]
        for _ in range(4):
            bar.advance()
        bar.close()
    assert pipe.text == ""
    assert tty.text.endswith("working [" + "#" * 30 + "] 4/4\n") and tty.text.count("\r") == 4
