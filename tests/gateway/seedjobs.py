"""Seed-format jobs for tests and benchmarks (design §2 email-processing payloads)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

PDF_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def email_payload(
    n: int,
    *,
    tenant: str = "tenant_abc",
    account: str = "acct_1",
    size: int = 3000,
    attachment: bool = False,
    message_id: str | None = None,
) -> dict[str, Any]:
    """An email:processing payload of about ``size`` bytes of body text."""
    plain = (f"Hello {n}, this is message number {n}. " * 80)[:size]
    payload: dict[str, Any] = {
        "tenant_id": tenant,
        "email_account_id": account,
        "direction": "inbound",
        "type": "email",
        "from": f"sender{n}@example.com",
        "to": [f"rcpt{n}@example.net", "cc@example.net"],
        "subject": f"Message {n}",
        "body": {"plain": plain, "html": f"<p>{plain}</p>"},
        "headers": {"X-Seq": str(n), "Message-ID": message_id or f"<m{n}@example.com>"},
        "messageId": message_id or f"<m{n}@example.com>",
    }
    if attachment:
        payload["attachments"] = [
            {
                "filename": f"doc{n}.pdf",
                "mime_type": "application/pdf",
                "size": len(PDF_BYTES),
                "content": base64.b64encode(PDF_BYTES).decode(),
                "disposition": "attachment",
            }
        ]
    return payload


def envelope(payload: dict[str, Any], **fields: Any) -> bytes:
    job: dict[str, Any] = {"id": str(uuid.uuid4()), "payload": payload}
    job.update(fields)
    return json.dumps(job).encode()
