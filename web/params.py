"""Query parameters of the API: a name the route does not know is a 400, never ignored.

Names are case-sensitive (``Stage`` is not ``stage``): an agent with a typo must not
silently work on every issue instead of the ones it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydraissue.parse import reject_unknown


def known_params(params: Mapping[str, str], allowed: Sequence[str]) -> None:
    """Refuse the first unknown parameter, naming it and listing the accepted ones."""
    if params:  # most requests have none: no sets built
        reject_unknown(params, allowed, query=True)
