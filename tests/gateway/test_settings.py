"""Settings: env prefix, TOML file, validation naming the setting, masking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.readme import render
from gateway.settings import ListenAddress, SettingsError, load_settings, reference_markdown


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults other issues rely on: HTTP on 127.0.0.1:8025, SMTP on 127.0.0.1:2525."""
    for name in ("MAILGATE_HTTP_LISTEN", "MAILGATE_SMTP_LISTEN", "MAILGATE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.http_listen == ListenAddress("127.0.0.1", 8025)
    assert s.smtp_listen == ListenAddress("127.0.0.1", 2525)
    assert s.shutdown_grace_s == 30
    assert s.database_url is None and s.redis_url is None


def test_environment_prefix_and_comma_separated_domains(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILGATE_* variables set fields; bounce domains are comma-separated, lower-cased."""
    monkeypatch.setenv("MAILGATE_BOUNCE_DOMAINS", "Bounces.Example.com, b.test")
    monkeypatch.setenv("MAILGATE_HTTP_LISTEN", "127.0.0.1:9100")
    monkeypatch.setenv("MAILGATE_DATABASE_URL", "postgresql://u:pw@db:5432/mg")
    s = load_settings()
    assert s.bounce_domains == ["bounces.example.com", "b.test"]
    assert s.http_listen.port == 9100
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql://u:pw@db:5432/mg"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("http_listen", "notaport"),
        ("smtp_listen", "127.0.0.1:70000"),
        ("shutdown_grace_s", "-1"),
        ("bounce_domains", "not a domain"),
        ("log_level", "CHATTY"),
        ("secret_key", "short"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value raises SettingsError whose message names the setting."""
    monkeypatch.setenv(f"MAILGATE_{name.upper()}", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert name in str(err.value)


def test_toml_file_and_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TOML file sets fields, env wins over it, and an unknown key is rejected."""
    monkeypatch.delenv("MAILGATE_HTTP_LISTEN", raising=False)
    good = tmp_path / "good.toml"
    good.write_text('http_listen = "127.0.0.1:9200"\nshutdown_grace_s = 5\n')
    assert load_settings(good).http_listen.port == 9200
    monkeypatch.setenv("MAILGATE_SHUTDOWN_GRACE_S", "7")
    assert load_settings(good).shutdown_grace_s == 7
    bad = tmp_path / "bad.toml"
    bad.write_text('http_listen = "127.0.0.1:9200"\nhttp_lisen = "x"\n')
    with pytest.raises(SettingsError, match="http_lisen"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="config"):
        load_settings(tmp_path / "missing.toml")


def test_masked_hides_secrets_but_keeps_hosts() -> None:
    """check-config output masks passwords and keys but shows where servers are."""
    s = load_settings(
        database_url="postgresql://mg:hunter2@db.internal:5432/mail",
        redis_url="redis://:s3cret@cache:6379/0",
        secret_key="k" * 40,
    )
    shown = s.masked()
    assert shown["database_url"] == "postgresql://mg:********@db.internal:5432/mail"
    assert "s3cret" not in str(shown) and "hunter2" not in str(shown)
    assert shown["secret_key"] == "********"


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    """`mailgate check-config` exits 2 naming http_listen for a bad value, 0 otherwise."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MAILGATE_HTTP_LISTEN": "notaport"}
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "http_listen" in bad.stderr
    env["MAILGATE_HTTP_LISTEN"] = "127.0.0.1:8125"
    env["MAILGATE_SECRET_KEY"] = "z" * 40
    good = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert '"http_listen": "127.0.0.1:8125"' in good.stdout
    assert "z" * 40 not in good.stdout


def test_reference_lists_every_setting() -> None:
    """The README's configuration reference is generated from the model, one row a field."""
    table = reference_markdown()
    for name in ("database_url", "redis_url", "data_dir", "http_listen", "bounce_domains"):
        assert f"`{name}`" in table
        assert f"MAILGATE_{name.upper()}" in table


def test_readme_generated_sections_are_current() -> None:
    """README's configuration reference and queue table equal what the settings model and
    the payload models generate (regenerate with `python -m gateway.readme README.md`)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert reference_markdown() in readme
    assert render(readme) == readme
