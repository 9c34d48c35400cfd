"""Issues as clients see them: the domain's dict plus the URLs of their files.

The API's JSON and the webhooks' payloads are the same object ("the issue as GET
returns it"), so both layers take it from here.
"""

from __future__ import annotations

from typing import Any

from hydraissue.model import Attachment, Issue


def upload_url(issue_id: int, filename: str) -> str:
    return f"/uploads/{issue_id}/{filename}"


def attachment_dict(issue_id: int, attachment: Attachment) -> dict[str, Any]:
    body = attachment.to_dict()
    body["url"] = upload_url(issue_id, attachment.filename)
    return body


def issue_dict(issue: Issue) -> dict[str, Any]:
    body = issue.to_dict()
    if issue.attachments:
        body["attachments"] = [attachment_dict(issue.id, a) for a in issue.attachments]
    return body
