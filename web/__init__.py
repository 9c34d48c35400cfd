"""aiohttp edges: routes, handlers, templates. No business rules live here."""
