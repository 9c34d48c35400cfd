"""Issues as the API shows them: the domain's dict plus the URLs the web layer serves.

The JSON bytes of each issue are cached per (id, seq): a list page is a join of cached
bytes, and a newer state can never be served with an older body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

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


class IssueJson:
    def __init__(self) -> None:
        self._cache: dict[int, tuple[int, bytes]] = {}

    def render(self, issue: Issue) -> bytes:
        hit = self._cache.get(issue.id)
        if hit is not None and hit[0] == issue.seq:
            return hit[1]
        # A copy: orjson's own buffer is several times larger than its content.
        body = memoryview(orjson.dumps(issue_dict(issue))).tobytes()
        self._cache[issue.id] = (issue.seq, body)
        return body

    def page(self, issues: Iterable[Issue]) -> bytes:
        render = self.render
        return b"[" + b",".join([render(issue) for issue in issues]) + b"]"

    def forget(self, issue_id: int) -> None:
        self._cache.pop(issue_id, None)
