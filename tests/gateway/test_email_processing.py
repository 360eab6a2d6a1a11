"""The incoming-email handler: seed payloads stored in one transaction, exactly once."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from gateway.app import App
from gateway.jobs import PermanentJobError
from gateway.jobs.contracts import EMAIL_PROCESSING, PayloadInvalid, family_of
from gateway.jobs.envelope import parse_job
from ingest.jobs import handle_incoming_email, record_from_payload
from tests.gateway.seedjobs import PDF_BYTES, email_payload, envelope


def _job(payload: dict[str, Any], job_id: str = "job-1") -> Any:
    """The job and its payload validated by the family's model, as the worker hands them."""
    job = parse_job(envelope(payload, id=job_id), EMAIL_PROCESSING)
    return job, family_of(EMAIL_PROCESSING).validate(job.payload)


async def test_stores_content_message_and_attachments(app: App) -> None:
    """One job stores email_content, email_messages and its attachment, decoded."""
    result = await handle_incoming_email(app, *_job(email_payload(1, attachment=True)))
    assert result["created"] and result["attachment_count"] == 1
    key = result["storage_key"]
    content = await app.db.fetchrow("SELECT * FROM email_content WHERE storage_key=$1", key)
    message = await app.db.fetchrow("SELECT * FROM email_messages WHERE storage_key=$1", key)
    attachment = await app.db.fetchrow("SELECT * FROM attachments WHERE parent_storage_key=$1", key)
    assert content["tenant_id"] == "tenant_abc"
    assert content["content_text"].startswith("Hello 1")
    assert content["headers"]["X-Seq"] == "1"
    assert content["retention_days"] == 2555
    assert message["to_email"] == "rcpt1@example.net,cc@example.net"
    assert message["direction"] == "inbound" and message["status"] == "received"
    assert message["message_id"] == "<m1@example.com>"
    assert message["email_account_id"] == "acct_1"
    assert attachment["content"] == PDF_BYTES
    assert attachment["size_bytes"] == len(PDF_BYTES)
    assert attachment["filename"] == "doc1.pdf" and attachment["mime_type"] == "application/pdf"


async def test_same_message_id_stores_once(app: App) -> None:
    """The same messageId for the same tenant and account stores once, whatever the job
    id; another account or tenant stores its own copy."""
    first = await handle_incoming_email(app, *_job(email_payload(7), "a"))
    again = await handle_incoming_email(app, *_job(email_payload(7), "b"))
    other = await handle_incoming_email(app, *_job(email_payload(7, account="acct_2"), "c"))
    assert first["created"] and not again["created"] and other["created"]
    assert first["storage_key"] == again["storage_key"] != other["storage_key"]
    assert await app.db.fetchval("SELECT count(*) FROM email_messages") == 2


async def test_bodies_are_derived_when_missing(app: App) -> None:
    """Only html: plain is derived from it; only plain: html is derived; to as a string."""
    p = email_payload(2)
    p["body"] = {"html": "<html><body><p>Hi&amp;bye</p><script>x()</script></body></html>"}
    p["to"] = "one@example.net, two@example.net"
    r = await handle_incoming_email(app, *_job(p, "h"))
    row = await app.db.fetchrow(
        "SELECT c.content_text, m.to_email FROM email_content c JOIN email_messages m "
        "USING (storage_key) WHERE storage_key=$1",
        r["storage_key"],
    )
    assert row["content_text"] == "Hi&bye"
    assert row["to_email"] == "one@example.net,two@example.net"
    p = email_payload(3)
    p["body"] = {"plain": "line1\nline <2>"}
    r = await handle_incoming_email(app, *_job(p, "p"))
    html = await app.db.fetchval(
        "SELECT content_html FROM email_content WHERE storage_key=$1", r["storage_key"]
    )
    assert html == "<div>line1<br>\nline &lt;2&gt;</div>"


async def test_unknown_account_is_stored_as_given(app: App) -> None:
    """Producers own their ids: an account mailgate does not know is kept, not refused."""
    r = await handle_incoming_email(app, *_job(email_payload(4, account="acct_unknown_9")))
    account = await app.db.fetchval(
        "SELECT email_account_id FROM email_messages WHERE storage_key=$1", r["storage_key"]
    )
    assert account == "acct_unknown_9"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tenant_id": None}, "tenant_id"),
        ({"direction": "sideways"}, "direction"),
        ({"to": {"a": 1}}, "to"),
        ({"attachments": [{"content": "!!!not base64"}]}, "attachments[0]"),
    ],
)
def test_bad_payloads_are_permanent_errors(change: dict[str, Any], message: str) -> None:
    """An invalid payload is refused naming the field (no useless retries): the model
    refuses shapes, the handler an attachment that is not base64."""
    p = email_payload(5)
    p.update(change)
    with pytest.raises((PayloadInvalid, PermanentJobError), match=re.escape(message)):
        record_from_payload(*_job(p))


async def test_message_without_message_id_is_keyed_by_job(app: App) -> None:
    """No messageId: a re-delivered job (same id) stores once, another job stores again."""
    p = email_payload(6)
    del p["messageId"]
    a = await handle_incoming_email(app, *_job(p, "same"))
    b = await handle_incoming_email(app, *_job(p, "same"))
    c = await handle_incoming_email(app, *_job(p, "other"))
    assert a["created"] and not b["created"] and c["created"]
    wrapped = base64.encodebytes(PDF_BYTES).decode()  # MIME line-wrapped base64 is fine
    p["attachments"] = [{"filename": "w.pdf", "content": wrapped}]
    d = await handle_incoming_email(app, *_job(p, "wrapped"))
    stored = await app.db.fetchval(
        "SELECT content FROM attachments WHERE parent_storage_key=$1", d["storage_key"]
    )
    assert stored == PDF_BYTES
    assert json.dumps(a) != json.dumps(c)
