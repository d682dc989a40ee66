"""One slurmrestd endpoint over HTTP (httpx): requests signed with the current Slurm JWT,
renewed and tried again once when the token is refused; every failure a
:class:`SlurmRestError` that names the URL, the HTTP status and slurmrestd's own words.

Telling a refused token from other failures: slurmrestd says 401 only when no token was
sent. With ``SLURM_JWT=daemon`` (how sites run it) a bad or expired token reaches
slurmctld, which refuses it, and the answer is a 500 that reads like something else (see
:mod:`kale.batch.slurm_rest`). So: an answer carrying a Slurm error number in 2000-2999
(``ESLURM_*``: slurmctld read the request, so the token was good) is a real refusal; a
token past its ``exp``, a 401/403, or any other failure that ``/ping`` repeats with the
same token, is the token's fault.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from kale.batch.rest_auth import TokenError, TokenSource
from kale.batch.slurm_rest import api_path, failure_text, failures
from kale.config import user_name
from kale.errors import SchedulerError

log = logging.getLogger("kale.batch")

#: seconds to wait for slurmrestd to connect and to answer
TIMEOUT = 30.0


class SlurmRestError(SchedulerError):
    """slurmrestd could not be reached, refused the token, or refused the request.
    ``status`` is the HTTP status (None when nothing answered); ``auth`` is true when the
    token is the problem; ``doc`` is slurmrestd's answer, when it gave one."""

    def __init__(self, message: str, *, status: int | None = None, auth: bool = False,
                 transient: bool = False, doc: Any = None) -> None:
        super().__init__(message, transient=transient)
        self.status, self.auth, self.doc = status, auth, doc


class SlurmRestClient:
    """Requests to one slurmrestd. Thread-safe (httpx's client is); one per endpoint."""

    def __init__(self, url: str, tokens: TokenSource, *, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.tokens = tokens
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def get(self, what: str) -> Any:
        return self.request("GET", what)

    def post(self, what: str, body: dict[str, Any]) -> Any:
        return self.request("POST", what, body)

    def delete(self, what: str) -> Any:
        return self.request("DELETE", what)

    def request(self, method: str, what: str, body: dict[str, Any] | None = None, *,
                accept: tuple[int, ...] = ()) -> Any:
        """Send ``method /slurm/v0.0.38/<what>``; the answer's JSON. Slurm error numbers in
        ``accept`` are answers, not failures (2017, "no such job", when polling)."""
        try:
            token = self.tokens.token()
        except TokenError as e:
            raise SlurmRestError(f"slurmrestd at {self.url}: {e}", auth=True) from None
        r, doc = self._send(method, what, token, body)
        if self._ok(r, doc, accept):
            return doc
        if self._token_refused(r, doc, token):
            try:
                fresh = self.tokens.renew(token)
            except TokenError as e:
                raise self._refused(r, doc, token, str(e)) from None
            if fresh is None:
                raise self._refused(r, doc, token, None)
            r, doc = self._send(method, what, fresh, body)
            if self._ok(r, doc, accept):
                return doc
            if self._token_refused(r, doc, fresh):
                raise self._refused(r, doc, fresh, "a renewed token was refused too")
        raise SlurmRestError(f"slurmrestd at {self.url} refused {method} {api_path(what)}: "
                             f"HTTP {r.status_code}: {_text(r, doc)}", status=r.status_code,
                             doc=doc)

    # -- helpers -------------------------------------------------------------------------
    def _send(self, method: str, what: str, token: str,
              body: dict[str, Any] | None) -> tuple[httpx.Response, Any]:
        headers = {"X-SLURM-USER-NAME": self.tokens.user(token) or user_name(),
                   "X-SLURM-USER-TOKEN": token}
        try:
            r = self._http.request(method, api_path(what), json=body, headers=headers)
        except httpx.TimeoutException:
            raise SlurmRestError(f"slurmrestd at {self.url} did not answer {method} "
                                 f"{api_path(what)} in {self._http.timeout.read or 0:g} s",
                                 transient=True) from None
        except httpx.HTTPError as e:
            raise SlurmRestError(f"cannot reach slurmrestd at {self.url}: "
                                 f"{_why(e)}", transient=True) from None
        try:
            doc = r.json()
        except ValueError:
            doc = None
        return r, doc

    @staticmethod
    def _ok(r: httpx.Response, doc: Any, accept: tuple[int, ...]) -> bool:
        found = failures(doc)
        if accept and found and all(f.number in accept for f in found):
            return True
        return r.is_success and isinstance(doc, dict) and not found

    def _token_refused(self, r: httpx.Response, doc: Any, token: str) -> bool:
        if r.status_code in (401, 403) or self.tokens.expired(token) is not None:
            return True
        numbers = [f.number for f in failures(doc)]
        if r.status_code == 400 or any(n is not None and 2000 <= n < 3000 for n in numbers):
            return False  # slurmctld (or slurmrestd's parser) read the request: not the token
        return not self._ping(token)

    def _ping(self, token: str) -> bool:
        try:
            r, doc = self._send("GET", "ping", token, None)
        except SlurmRestError:
            return False
        return self._ok(r, doc, ())

    def _refused(self, r: httpx.Response, doc: Any, token: str,
                 renewal: str | None) -> SlurmRestError:
        exp = self.tokens.expired(token)
        if exp is not None:
            why = f"the token expired at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(exp))}"
        else:
            why = "the token was refused (or slurmctld does not answer)"
        how = renewal or "no other token to try"
        return SlurmRestError(
            f"slurmrestd at {self.url}: {why} (HTTP {r.status_code}: {_text(r, doc)}); "
            f"tokens come from {self.tokens.where}" + (f"; {how}" if how else ""),
            status=r.status_code, auth=True, doc=doc)


def _text(r: httpx.Response, doc: Any) -> str:
    """slurmrestd's words: its errors, else the body's first line, else the reason."""
    body = r.text.strip().splitlines()
    return failure_text(doc) or (body[0][:200] if body else r.reason_phrase or "no answer")


def _why(e: httpx.HTTPError) -> str:
    """The first line of what went wrong (httpx's own text, or its cause's)."""
    text = str(e) or str(e.__cause__ or e.__context__ or "") or type(e).__name__
    return text.strip().splitlines()[0]
