"""Reading form posts: url-encoded or multipart, files streamed with limits."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader
from aiohttp.web_protocol import RequestPayloadError

from hydraissue.config import Config
from hydraissue.errors import Invalid, TooLarge
from hydraissue.parse import BadPart, form_part
from hydraissue.uploads import Budget, Limits, Received, UploadStore, human

MAX_TEXT_FIELD = 256 * 1024
MAX_TEXT_TOTAL = 1024 * 1024  # every text value, field name and part header together
MAX_PARTS = 100
PART_OVERHEAD = 256  # charged per part, so thousands of empty parts cost too
MAX_DRAIN = 8 * 1024 * 1024  # read past a limit at most this far, then stop reading
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def upload_limits(config: Config) -> Limits:
    return Limits(
        max_file_bytes=config.upload_max_file_bytes,
        max_files=config.upload_max_files,
        max_request_bytes=config.upload_max_request_bytes,
    )


@dataclass(slots=True)
class FormPost:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[Received] = field(default_factory=list)
    too_large: TooLarge | None = None


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(256 * 1024):
        yield chunk


async def _text(part: BodyPartReader, name: str, budget: list[int]) -> str:
    data = bytearray()
    async for chunk in _chunks(part):
        data += chunk
        budget[0] += len(chunk)
        if len(data) > MAX_TEXT_FIELD or budget[0] > MAX_TEXT_TOTAL:
            raise TooLarge(
                f"field {name!r} is too long",
                {"field": name, "limit": MAX_TEXT_FIELD},
            )
    try:
        return data.decode(part.get_charset("utf-8"), errors="replace")
    except LookupError:  # a charset nobody has heard of
        return data.decode("utf-8", errors="replace")


async def _next_part(reader: MultipartReader) -> object:
    """The next part. aiohttp peeks at each part's Content-Disposition (for RFC 7578's
    ``_charset_``) and warns about one it cannot parse; we read that header ourselves
    (``hydraissue.parse.form_part``), so its warning is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadContentDispositionHeader)
        return await reader.next()


async def _drain(part: BodyPartReader, left: list[int]) -> bool:
    """Skip a part's bytes within the drain allowance; False once it is used up."""
    async for chunk in _chunks(part):
        left[0] -= len(chunk)
        if left[0] < 0:
            return False
    return True


async def read_form(
    request: web.Request,
    uploads: UploadStore,
    limits: Limits,
    file_field: str,
    *,
    keep_files: bool = False,
) -> FormPost:
    """Fields and whole files; a size limit stops reading and keeps what was typed.

    Part names come from ``hydraissue.parse.form_part`` (aiohttp's parser gives up on a
    file name with two ``;``), and a part it cannot name is a 400 saying why. With
    ``keep_files`` the files received before one over a limit stay in ``files`` (the
    caller keeps them for the reporter's next try, or discards them).
    """
    if request.content_type not in FORM_TYPES:
        raise Invalid(
            "Content-Type",
            f"must be one of {', '.join(FORM_TYPES)}, got {request.content_type or 'none'}",
        )
    if request.content_type == FORM_TYPES[0]:
        try:
            posted = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge("the form is too large", {"limit": request.client_max_size}) from None
        except (UnicodeDecodeError, LookupError) as exc:
            raise Invalid("body", f"could not be decoded as form text ({exc})") from None
        return FormPost(fields={k: v for k, v in posted.items() if isinstance(v, str)})
    ceiling = limits.max_request_bytes + MAX_TEXT_TOTAL
    post = FormPost()
    if request.content_length is not None and request.content_length > ceiling:
        # Too big to be worth reading at all: answer before the upload finishes.
        post.too_large = TooLarge(
            f"the upload is larger than {human(limits.max_request_bytes)}, "
            "the limit for one report",
            {"field": file_field, "limit": limits.max_request_bytes},
        )
        return post
    budget = Budget(limits)
    text_budget = [0]
    drain = [MAX_DRAIN]
    try:
        reader = await request.multipart()
        parts = 0
        while (part := await _next_part(reader)) is not None:
            parts += 1
            if not isinstance(part, BodyPartReader):
                raise Invalid("body", "nested multipart bodies are not supported")
            text_budget[0] += PART_OVERHEAD + sum(map(len, part.headers.values()))
            if parts > MAX_PARTS or text_budget[0] > MAX_TEXT_TOTAL:
                raise TooLarge(f"the form has too many parts (at most {MAX_PARTS})", {})
            try:
                name, filename = form_part(part.headers.get("Content-Disposition"))
            except BadPart as exc:
                raise Invalid(
                    "body",
                    f"part {parts} of the multipart body {exc}",
                    {"field": "body", "part": parts, "problem": str(exc)},
                ) from None
            if filename is None:
                post.fields[name] = await _text(part, name, text_budget)
            elif name != file_field:
                raise Invalid(name, f"unexpected file field; send files as {file_field!r}")
            elif filename == "" or post.too_large is not None:
                # An empty file input, or files after one over a limit.
                if not await _drain(part, drain):
                    break
            else:
                try:
                    post.files.append(await uploads.receive(_chunks(part), filename, budget))
                except TooLarge as exc:
                    # Keep reading: browsers send the fields after the file input.
                    post.too_large = exc
                    if not await _drain(part, drain):
                        break
    except TooLarge as exc:  # text over its limit, or too many parts
        post.too_large = exc
    except (ValueError, HttpProcessingError, RequestPayloadError) as exc:  # malformed body
        uploads.discard(post.files)
        raise Invalid("body", f"is not a valid multipart body ({exc})") from None
    except BaseException:
        uploads.discard(post.files)
        raise
    if post.too_large is not None and not keep_files:
        uploads.discard(post.files)
        post.files = []
    return post
