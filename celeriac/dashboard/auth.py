"""Who may see the dashboard: a bearer token (or the cookie it sets), or basic auth.

The check is a pure function of the configured credentials and the request's
``Authorization`` header and cookie; the middleware applies it to every route but
``/healthz`` (for probes). Opening the page once with ``?token=...`` sets an
HttpOnly cookie holding a digest of the token, so the token does not stay in the
address bar and scripts on the page cannot read it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from celeriac.dashboard.settings import Credentials

COOKIE = "celeriac_dashboard"
OPEN_PATHS = frozenset({"/healthz"})
REALM = "celeriac dashboard"


def cookie_value(token: str) -> str:
    """What the session cookie holds for ``token``: a digest, never the token itself."""
    return hmac.new(token.encode(), b"celeriac-dashboard-cookie", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _basic(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        user, sep, password = decoded.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def authorized(credentials: Credentials, authorization: str | None, cookie: str | None) -> bool:
    """True when the request may go on: no credentials configured, or one of them given."""
    if credentials.open:
        return True
    header = (authorization or "").strip()
    if credentials.token is not None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), credentials.token):
            return True
        if cookie and _same(cookie, cookie_value(credentials.token)):
            return True
    if credentials.username is not None and credentials.password is not None:
        pair = _basic(header)
        if pair is not None:
            # Both compared, whatever the first gives, so timing tells nothing.
            user_ok = _same(pair[0], credentials.username)
            password_ok = _same(pair[1], credentials.password)
            return user_ok and password_ok
    return False


def _denied(credentials: Credentials, request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        response: Response = JSONResponse(
            {"error": "not authorized: send the dashboard's credentials"}, status_code=401
        )
    else:
        hint = " or open the page with ?token=<token>" if credentials.token else ""
        response = PlainTextResponse(
            f"Not authorized: send the dashboard's credentials{hint}.\n", status_code=401
        )
    if credentials.username is not None:
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    elif credentials.token is not None:
        response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
    return response


class AuthMiddleware:
    """Lets a request through only when :func:`authorized` says so."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.credentials.open:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = self.credentials.token
        given = request.query_params.get("token")
        if token is not None and given is not None and request.method == "GET":
            await self._login(request, token, given)(scope, receive, send)
            return
        if authorized(
            self.credentials, request.headers.get("authorization"), request.cookies.get(COOKIE)
        ):
            await self.app(scope, receive, send)
            return
        await _denied(self.credentials, request)(scope, receive, send)

    def _login(self, request: Request, token: str, given: str) -> Response:
        """``?token=``: set the cookie and drop the token from the address."""
        if not _same(given, token):
            return _denied(self.credentials, request)
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, cookie_value(token), httponly=True, samesite="strict",
            secure=request.url.scheme == "https", path="/",
        )  # fmt: skip
        return response
