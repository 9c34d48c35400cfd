"""Full issues in memory at about their own size: each kept as its JSON.

A full issue as Python objects (an Issue, a tuple of Comment objects, one str per
field) took about 2.5 KB beside its 1.2 KB of JSON, so 100,000 issues outgrew their
memory target. Kept as bytes, an issue costs what its JSON costs; the bytes are also
what the API sends for it (the web layer adds attachment URLs). An ``Issue`` is built
from them when one is needed (a decision, a page, an issue file: about 20 µs), and the
most recently used ones are kept as objects.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import orjson

from hydraissue.model import Issue, issue_from_dict

HOT = 4096  # issues kept as objects as well (the ones being written and read now)
# ... and at most this much of their JSON: a few thousand large reports kept as objects
# too would cost about 2x their JSON again (measured: 500 reports of 25 KB, 57-72 KB of
# memory each while hot); with the budget, the hot set of large issues is small.
HOT_BYTES = 8 * 1024 * 1024


def issue_json(issue: Issue) -> bytes:
    """The issue's JSON (``Issue.to_dict``), as an exact-size bytes object."""
    # A copy: orjson's own buffer can be several times larger than its content.
    return memoryview(orjson.dumps(issue.to_dict())).tobytes()


class CompactIssues:
    def __init__(self, hot: int = HOT, hot_bytes: int = HOT_BYTES) -> None:
        self._json: dict[int, bytes] = {}
        self._hot: OrderedDict[int, Issue] = OrderedDict()
        self._hot_size = hot
        self._hot_bytes = hot_bytes
        self._hot_used = 0  # the JSON size of the hot issues
        self._weights: dict[int, int] = {}

    def __contains__(self, issue_id: int) -> bool:
        return issue_id in self._json

    def __len__(self) -> int:
        return len(self._json)

    def json(self, issue_id: int) -> bytes | None:
        return self._json.get(issue_id)

    def jsons(self, ids: Iterable[int]) -> list[bytes | None]:
        """Many at once (a list page): one C-level loop instead of a call per issue."""
        return list(map(self._json.get, ids))

    def get(self, issue_id: int, seq: int, deleted: bool, status_at: str) -> Issue | None:
        """The issue as an object, built from its JSON unless it is hot."""
        hot = self._hot.get(issue_id)
        if hot is not None:
            self._hot.move_to_end(issue_id)
            return hot
        raw = self._json.get(issue_id)
        if raw is None:
            return None
        fields = orjson.loads(raw)
        fields["seq"] = seq
        fields["deleted"] = deleted
        fields["status_at"] = status_at
        issue = issue_from_dict(fields)
        self._keep_hot(issue)
        return issue

    def put(self, issue: Issue, json: bytes | None = None) -> None:
        self._json[issue.id] = json if json is not None else issue_json(issue)
        self._keep_hot(issue)

    def put_json(self, issue_id: int, json: bytes) -> None:
        """A state known only as JSON (loaded in the background): not made hot."""
        self._drop_hot(issue_id)
        self._json[issue_id] = json

    def pop(self, issue_id: int) -> None:
        self._drop_hot(issue_id)
        self._json.pop(issue_id, None)

    def _drop_hot(self, issue_id: int) -> None:
        if self._hot.pop(issue_id, None) is not None:
            self._hot_used -= self._weights.pop(issue_id, 0)

    def _keep_hot(self, issue: Issue) -> None:
        self._drop_hot(issue.id)
        weight = len(self._json.get(issue.id, b""))
        self._hot[issue.id] = issue
        self._weights[issue.id] = weight
        self._hot_used += weight
        while self._hot and (len(self._hot) > self._hot_size or self._hot_used > self._hot_bytes):
            oldest, _ = self._hot.popitem(last=False)
            self._hot_used -= self._weights.pop(oldest, 0)
