"""docs/alerts.yaml: Prometheus accepts the rules (`promtool check rules`, Debian's
prometheus package), each fires on the series it is about (`promtool test rules` with
docs/alerts.test.yaml), the issue's alerts are all there, and every metric they name is one
a mailgate process exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bounces.metrics import METRICS as BOUNCE_METRICS
from delivery.metrics import METRICS as DELIVERY_METRICS
from gateway.app import App
from gateway.services import Services
from ingest.metrics import IngestMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
PROMQL_WORDS = {
    "sum", "max", "min", "by", "and", "or", "unless", "absent", "increase", "delta", "rate",
    "clamp_min", "offset", "on", "without",
}  # fmt: skip


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: apt-get install prometheus", pytrace=False)
    return subprocess.run(
        [tool, *args], cwd=DOCS, capture_output=True, text=True, timeout=60, check=False
    )


def _rules() -> list[dict[str, str]]:
    doc = yaml.safe_load((DOCS / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules_and_their_cases_pass() -> None:
    """`promtool check rules` finds every rule valid; `promtool test rules` passes."""
    checked = _promtool("check", "rules", "alerts.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout
    tested = _promtool("test", "rules", "alerts.test.yaml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_issue_alerts_exist() -> None:
    """Queue depth over 1,000, dead letters growing, no live worker, watchers in backoff,
    the listener answering 451, bounce and complaint rates over their guards."""
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in _rules()}
    assert "> 1000" in exprs["MailgateQueueDepthHigh"]
    assert 'queue_depth{queue="queue:dead"}' in exprs["MailgateDeadLettersGrowing"]
    assert 'component="worker"' in exprs["MailgateNoLiveWorker"]
    assert 'state="backoff"' in exprs["MailgateWatchersInBackoff"]
    assert "storage|error" in exprs["MailgateListenerAnswering451"]
    assert 'bounce_type="hard"' in exprs["MailgateBounceRateHigh"]
    assert 'kind="complaint"' in exprs["MailgateComplaintRateHigh"]


async def test_every_metric_named_is_exported(app: App, services: Services) -> None:
    """Each metric in an expression is one of mailgate's (the gateway's, ingest's, the
    bounce and delivery metrics) and has the labels the expression filters on."""
    ingest = IngestMetrics.of(app.metrics.registry)
    bounces = services.get(BOUNCE_METRICS)
    delivery = services.get(DELIVERY_METRICS)
    exported: dict[str, Any] = {
        "queue_depth": app.metrics.queue_depth,
        "component_up": app.metrics.component_up,
        "jobs_dead_total": app.metrics.jobs_dead,
        "imap_connections": ingest.connections,
        "smtp_listener_rejections_total": bounces.rejections,
        "bounces_total": bounces.bounces,
        "smtp_deliveries_total": delivery.deliveries,
    }
    # The label names of each; labels() refuses a set that is not exactly the metric's own,
    # so this table is checked against the metrics themselves.
    label_names = {
        "queue_depth": ("queue",),
        "component_up": ("component",),
        "jobs_dead_total": ("queue",),
        "imap_connections": ("state",),
        "smtp_listener_rejections_total": ("cause",),
        "bounces_total": ("kind", "bounce_type", "reason"),
        "smtp_deliveries_total": ("result",),
    }
    for name, metric in exported.items():
        metric.labels(**dict.fromkeys(label_names[name], "x"))
    named = 0
    for rule in _rules():
        expr = re.sub(r"\b(by|without|on)\s*\([^)]*\)", " ", rule["expr"])
        for name, selector in re.findall(r"\b([a-z_][a-z0-9_]*)\s*(\{[^}]*\})?", expr):
            if name in PROMQL_WORDS:
                continue
            assert name in exported, f"{rule['alert']}: {name} is not a mailgate metric"
            wanted = re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector or "")
            assert set(wanted) <= set(label_names[name]), f"{rule['alert']}: {name} {wanted}"
            named += 1
    assert named >= len(_rules())
