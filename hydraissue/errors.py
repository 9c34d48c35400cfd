"""Domain errors. Each carries its HTTP meaning; ``web/`` renders them in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    error = "bad_request"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.status, "detail": self.detail}


class Invalid(DomainError):
    """Input that breaks a rule; ``field`` names what to fix."""

    status = 400

    def __init__(self, field: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{field}: {message}", detail if detail is not None else {"field": field})
        self.field = field


class Forbidden(DomainError):
    """The caller may not do this (a human's decision asked for with an agent's token)."""

    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class PreconditionFailed(DomainError):
    status = 412


class TooLarge(DomainError):
    status = 413


class StorageUnavailable(DomainError):
    """The disk refused a write (full, read-only): nothing was committed."""

    status = 503


class TooManyRequests(DomainError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


class IssueUnavailable(DomainError):
    """The issue's event log is damaged: only this issue is out of service."""

    status = 503


class KeyReused(DomainError):
    """An Idempotency-Key sent again with a different request."""

    status = 422
