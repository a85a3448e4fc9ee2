"""The status page: the host's checks, history and maintenance in a browser, on the agent's own port.

`/` (every check, worst first), `/check/NAME` (charts, incidents, runs, actions), `/actions`, `/log`,
`/checklists` and `/maintenance`: server-rendered HTML with inline SVG and an inline stylesheet, no
script and nothing fetched from elsewhere, so the Content-Security-Policy can forbid everything else.

The HTTP handler imports this package on the first page request, after its TLS and auth checks, never at
start: its code, Jinja2 and the compiled templates cost memory an agent nobody looks at should not carry.
Pages read the store through read-only connections with bounded queries: the overview through its own,
one request at a time; every other page through a second one, also one at a time, so a year's chart of
one check never holds the overview up.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from agent.plugin import logs
from agent.plugin.storefile import StoreMissing, open_readonly
from agent.http.statuspage import pages
from agent.http.statuspage.recent import Recent
from agent.http.statuspage.render import render

if TYPE_CHECKING:
    from agent.config.load import LoadedConfig
    from agent.http.metrics import AgentState

CONTENT_TYPE = "text/html; charset=utf-8"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REFRESH_SECONDS = 30                   # default auto-refresh; `?refresh=0` turns it off, `?refresh=N` sets it
REFRESH_BOUNDS = (5, 3600)
NAV = (("/", "Overview"), ("/actions", "Actions"), ("/log", "Log"), ("/checklists", "Checklists"),
       ("/maintenance", "Maintenance"))

_locks = {"overview": threading.Lock(), "pages": threading.Lock()}
_connections: dict[str, tuple[str, sqlite3.Connection]] = {}   # lock name → (store path, read-only connection)
_recent = Recent()


def respond(path: str, query: str, loaded: LoadedConfig, state: AgentState,
            now: float | None = None) -> tuple[int, bytes, str, dict[str, str]]:
    """Given a request's path and query string, the current config and the daemon's state, return
    (HTTP status, body, content type, headers) of the page. Never raises: a store that cannot be read is
    a 503 page, a bug a 500 with one log line."""
    now = time.time() if now is None else now
    try:
        params = {key: values[-1] for key, values in parse_qs(query, max_num_fields=20).items()}
    except ValueError:   # more fields than any page takes: none of them is ours
        params = {}
    refresh = _refresh(params.get("refresh"))
    try:
        with _locks[_lane(path)]:
            code, template, context = _page(path, params, loaded, state, now)
            context["agent"] = pages.agent_header(loaded, state, now)
        body = render(template, **context, tz=loaded.tz, now=now, refresh=refresh, path=path, nav=NAV,
                      href=_linker(refresh is None), refresh_href=_refresh_link(path, params, refresh))
    except Exception as exc:  # the page is a convenience: a bug in it must not cost a thread or a traceback
        logs.event("statuspage.failed", "error", path=path, error=f"{type(exc).__name__}: {exc}")
        code, body = 500, "<!DOCTYPE html><title>error</title><p>The status page failed; the agent's log has why."
    return code, body.encode(), CONTENT_TYPE, dict(SECURITY_HEADERS)


def _page(path: str, params: dict[str, str], loaded: LoadedConfig, state: AgentState,
          now: float) -> tuple[int, str, dict[str, Any]]:
    try:
        conn = _connection(loaded, _lane(path))
    except (StoreMissing, sqlite3.Error) as exc:
        return 503, "error.html.j2", {"title": "Store unavailable", "error": f"the store cannot be read: {exc}"}
    try:
        if path == "/":
            return 200, "overview.html.j2", pages.overview(conn, loaded, state, _recent, now)
        if path.startswith("/check/"):
            name = unquote(path[len("/check/"):])
            context = pages.check(conn, loaded, state, name, params.get("range", "24h"), now)
            if context is None:
                return 404, "not_found.html.j2", {"title": "Unknown check",
                                                  "message": f"No check named “{name}” is configured."}
            return 200, "check.html.j2", context
        if path == "/actions":
            return 200, "actions.html.j2", pages.actions(conn, loaded)
        if path == "/log":
            return 200, "log.html.j2", pages.log(conn, params.get("category") or None)
        if path == "/checklists":
            return 200, "checklists.html.j2", pages.checklists(conn, loaded, now)
        if path == "/maintenance":
            return 200, "maintenance.html.j2", pages.maintenance(conn, loaded, state, now)
    except sqlite3.Error as exc:   # locked beyond the busy timeout, damaged: say so, and reopen next time
        _connections.pop(_lane(path), None)
        return 503, "error.html.j2", {"title": "Store unavailable", "error": f"reading the store failed: {exc}"}
    return 404, "not_found.html.j2", {"title": "Not found", "message": f"There is no page at {path}."}


def _lane(path: str) -> str:
    return "overview" if path == "/" else "pages"


def _connection(loaded: LoadedConfig, lane: str) -> sqlite3.Connection:
    """The lane's read-only connection to the configured store, opened once (again when the path changes).
    Called with the lane's lock held."""
    path = str(loaded.db_path)
    current = _connections.get(lane)
    if current is not None and current[0] == path:
        return current[1]
    if current is not None:
        current[1].close()
    conn = open_readonly(loaded.db_path, shared=True)
    _connections[lane] = (path, conn)
    return conn


def _refresh(value: str | None) -> int | None:
    """Seconds between reloads, None for off; a value that is not a number means the default."""
    if value is None:
        return REFRESH_SECONDS
    if value.strip().lower() in ("0", "off", "no", "false"):
        return None
    try:
        return min(max(int(value), REFRESH_BOUNDS[0]), REFRESH_BOUNDS[1])
    except ValueError:
        return REFRESH_SECONDS


def _linker(paused: bool):
    """`href(path, **params)` for the templates: links keep auto-refresh off once it is turned off."""
    def href(path: str, **params: Any) -> str:
        if paused:
            params.setdefault("refresh", "0")
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return quote(path, safe="/") + ("?" + query if query else "")
    return href


def _refresh_link(path: str, params: dict[str, str], refresh: int | None) -> str:
    """This page with auto-refresh switched the other way."""
    others = {k: v for k, v in params.items() if k != "refresh"}
    if refresh is not None:
        others["refresh"] = "0"
    query = urlencode(others)
    return quote(path, safe="/") + ("?" + query if query else "")
