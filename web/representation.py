"""Issues as the API shows them: the domain's dict plus the URLs the web layer serves.

A list page is a join of the bytes the read model keeps; an issue with files gets its
URLs added once per (id, seq), so a newer state is never served with an older body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from hydraissue.model import Attachment, Issue
from hydraissue.representation import attachment_dict, issue_dict, upload_url
from projections.compact import issue_json
from projections.readmodel import IssueReadModel
from projections.rows import IndexRow

__all__ = ["IssueJson", "absolute_attachment", "attachment_dict", "issue_dict", "upload_url"]


def absolute_attachment(base: str, issue_id: int, attachment: Attachment) -> dict[str, Any]:
    """An attachment as JSON shows it: its ``url`` absolute, built from ``base``."""
    body = attachment_dict(issue_id, attachment)
    body["url"] = f"{base}{body['url']}"
    return body


def absolute_issue_dict(base: str, issue: Issue) -> dict[str, Any]:
    """The issue as the API shows it: every URL in it absolute (pages use relative ones)."""
    body = issue.to_dict()
    if issue.attachments:
        body["attachments"] = [absolute_attachment(base, issue.id, a) for a in issue.attachments]
    return body


def _json_array(items: list[bytes]) -> bytes:
    """``[a,b,…]`` in one copy of the items (a page is about 60 KB; ``b"[" + … + b"]"``
    copied it three times)."""
    if not items:
        return b"[]"
    parts = [b","] * (2 * len(items) + 1)
    parts[0], parts[-1] = b"[", b"]"
    parts[1::2] = items
    return b"".join(parts)


class IssueJson:
    """The API's JSON of issues. An issue without files is sent as the read model keeps
    it (its bytes are the API's); one with files gets their URLs, rendered once per
    (id, seq) and cached. ``base`` (the configured ``base_url``, else the address the
    server is reachable at) makes those URLs absolute, as the report's ``url`` is."""

    def __init__(self, base: str = "") -> None:
        self.base = base.rstrip("/")
        self._with_urls: dict[int, tuple[int, bytes]] = {}

    def render(self, issue: Issue) -> bytes:
        """From an issue object in hand (the answer to a write)."""
        if not issue.attachments:
            return issue_json(issue)
        hit = self._with_urls.get(issue.id)
        if hit is not None and hit[0] == issue.seq:
            return hit[1]
        body = memoryview(orjson.dumps(absolute_issue_dict(self.base, issue))).tobytes()
        self._with_urls[issue.id] = (issue.seq, body)
        return body

    def of(self, row: IndexRow, raw: bytes, issue: Callable[[int], Issue | None]) -> bytes | None:
        """From the read model's bytes; ``issue`` builds the object when URLs are needed."""
        if not row.attachments:
            return raw
        hit = self._with_urls.get(row.id)
        if hit is not None and hit[0] == row.seq:
            return hit[1]
        found = issue(row.id)
        return self.render(found) if found is not None else None

    def page_of(self, ids: Sequence[int], model: IssueReadModel) -> bytes:
        """A list page from ids: the kept bytes of each issue (no Issue object built for
        one without files). The usual page (every issue in memory, none with files) is
        a join of the read model's bytes, without a call per issue."""
        plain = model.plain_jsons(ids)
        if plain is not None:
            return _json_array(plain)
        page_rows = list(map(model.rows.get, ids))
        raws = model.jsons(ids)
        parts: list[bytes] = []
        for issue_id, row, raw in zip(ids, page_rows, raws, strict=True):
            if row is None or row.deleted:
                continue
            if raw is None:  # not loaded yet: build it
                found = model.issue(issue_id)
                if found is not None:
                    parts.append(self.render(found))
                continue
            body = self.of(row, raw, model.issue)
            if body is not None:
                parts.append(body)
        return b"[" + b",".join(parts) + b"]"

    def forget(self, issue_id: int) -> None:
        self._with_urls.pop(issue_id, None)
