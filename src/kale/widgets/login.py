"""Login: connect to a Kale manager with its token, or through SSH to a cluster's login
node where the manager runs. The token travels in a message from the browser to the
kernel and is never a widget trait, so it is not saved with the notebook."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import traitlets as T

from kale.errors import KaleError
from kale.widgets.base import KaleWidget, asset


def _remote_path(path: str) -> str:
    """``path`` for a remote shell: quoted, with a leading ``~/`` left to expand."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"' + ("/" + shlex.quote(rest) if rest else "")
    return shlex.quote(path)


class Login(KaleWidget):
    """Connect to a manager. ``method="token"``: its URL (``https://HOST:PORT``), a user
    token (or the file holding one) and the manager's TLS certificate (a file, or its PEM
    text; by default this home's), the only one trusted: a server that fails that check
    gets no token. ``method="ssh"``: an SSH host (an alias from ``~/.ssh/config``, or
    ``user@host``) and optionally a key file, else the SSH agent; Kale reads the
    manager's address, its certificate and your token from the Kale home there
    (``remote_home``) and reaches the manager through an SSH tunnel, still pinning that
    certificate. Afterwards ``client`` is a
    :class:`kale.Client`, and the ``on_connect`` callbacks get it."""

    _esm = asset("common.js", "login.js")
    method = T.Enum(["token", "ssh"], "token").tag(sync=True)
    url = T.Unicode("").tag(sync=True)
    host = T.Unicode("").tag(sync=True)
    identity = T.Unicode("").tag(sync=True)
    remote_home = T.Unicode("~/.kale").tag(sync=True)
    connected = T.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(None, **kwargs)
        self.client: Any = None
        self.on_connect: list[Callable[[Any], Any]] = []
        self._tunnel: Any = None

    def act(self, action: str, content: dict[str, Any]) -> None:
        form = dict(content.get("form") or {})
        if action == "connect" and form.get("method") == "ssh":
            self.connect_ssh(str(form.get("host") or ""), identity=form.get("identity") or None,
                             remote_home=str(form.get("remote_home") or "~/.kale"))
        elif action == "connect":
            self.connect_token(str(form.get("url") or ""), token=form.get("token") or None,
                               token_file=form.get("token_file") or None,
                               cert=form.get("cert") or None)
        elif action == "disconnect":
            self.disconnect()
        else:
            super().act(action, content)

    def connect_token(self, url: str, token: str | None = None,
                      token_file: str | None = None, cert: str | None = None) -> Any:
        """Connect to the manager at ``url`` with ``token`` (or the one in
        ``token_file``), trusting only ``cert`` (a file or PEM text; default: this Kale
        home's certificate)."""
        from pathlib import Path

        if not url:
            raise KaleError("give the manager's URL (as `kale manager status` shows it)")
        if not token and token_file:
            token = Path(token_file).expanduser().read_text().strip()
        if not token:
            raise KaleError("give a token, or the file that holds it")
        self.method, self.url = "token", url
        return self._connected(url, token, f"manager at {url}", cert)

    def connect_ssh(self, host: str, identity: str | None = None,
                    remote_home: str = "~/.kale", timeout: float = 30.0) -> Any:
        """Reach the manager of the Kale home ``remote_home`` on ``host`` through SSH."""
        from kale.kernels.attach import Tunnel

        if not host:
            raise KaleError("give the SSH host (an alias from ~/.ssh/config, or user@host)")
        self.method, self.host, self.remote_home = "ssh", host, remote_home
        self.identity = identity or ""
        state = json.loads(self._ssh_read(host, identity, f"{remote_home}/manager.json",
                                          "no manager runs there (start one: "
                                          "`kale manager start`)", timeout))
        token = self._ssh_read(host, identity, f"{remote_home}/token",
                               "no token there", timeout).strip()
        # The certificate comes the way the token does (SSH, from the home): the tunnel
        # then reaches a manager that proves it holds that certificate's key.
        cert = self._ssh_read(host, identity, f"{remote_home}/tls/manager.crt",
                              "no manager certificate there (is the manager older than "
                              "this Kale? restart it)", timeout)
        where = urlsplit(str(state["url"]))
        self.disconnect()
        self._tunnel = Tunnel(host, {"api": (where.hostname or "127.0.0.1",
                                             int(where.port or 443))}, timeout, identity)
        local = f"https://127.0.0.1:{self._tunnel.local['api']}"
        return self._connected(local, token, f"manager on {host} (through SSH)", cert)

    @staticmethod
    def _ssh_read(host: str, identity: str | None, path: str, missing: str,
                  timeout: float) -> str:
        argv = ["ssh", "-o", "BatchMode=yes"]
        if identity:
            argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        argv += [host, "cat", _remote_path(path)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise KaleError(f"ssh {host}: no answer within {timeout:g} s") from None
        if done.returncode == 255:
            raise KaleError(f"ssh {host} failed: {done.stderr.strip() or 'no output'}")
        if done.returncode:
            raise KaleError(f"{host}:{path}: {missing} ({done.stderr.strip()})")
        return done.stdout

    def _connected(self, url: str, token: str, what: str, cert: str | None = None) -> Any:
        from kale.client.remote import Client

        try:
            client = Client(url=url, token=token, cert=cert)
        except KaleError as e:
            raise KaleError(f"cannot use the {what}: {e}") from None
        try:
            client.runs(1)  # the token is checked here, not at the first real use
        except Exception as e:
            client.close()
            raise KaleError(f"cannot use the {what}: {e}") from None
        if self.client is not None:
            self.client.close()
        self.client = client
        self.connected = what
        self.message = f"connected to the {what}"
        for callback in self.on_connect:
            callback(client)
        return client

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None
        self.connected = ""

    def close(self) -> None:
        self.disconnect()
        super().close()
