"""Query parameters of the API: a name the route does not know is a 400, never ignored.

Names are case-sensitive (``Stage`` is not ``stage``): an agent with a typo must not
silently work on every issue instead of the ones it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import unquote_plus

from aiohttp import web

from hydraissue.parse import reject_unknown


def param_name(part: str) -> str:
    """The decoded name of one ``name=value`` part of a raw query string (decoding
    only when there is something to decode: access lines and list links call it per
    request)."""
    name = part.partition("=")[0]
    return unquote_plus(name) if "%" in name or "+" in name else name


def known_query(request: web.Request, allowed: Sequence[str]) -> None:
    """``known_params`` of the request's query, without building the query dict for a
    request that has none (most do not: get-by-id is the hot path)."""
    if request.rel_url.raw_query_string:
        known_params(request.query, allowed)


def known_params(params: Mapping[str, str], allowed: Sequence[str]) -> None:
    """Refuse the first unknown parameter, naming it and listing the accepted ones."""
    if params:  # most requests have none: no sets built
        reject_unknown(params, allowed, query=True)
