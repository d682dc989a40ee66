"""The sites this user defined: ``$KALE_HOME/sites.json`` (0600 in the 0700 home), written
by ``kale site add`` and read by every ``--site`` option and ``wf.run(site=...)``.

Invariants: a site's name is a lower-case identifier; its address is ``ssh://[USER@]HOST
[:PORT]`` (HOST may be an alias of ``~/.ssh/config``); the file is replaced atomically, so
a reader sees the old or the new list, never half of one. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kale.config import kale_home
from kale.errors import SiteConfigError

SITES_FILE = "sites.json"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: ssh options a site may not set: they would undo what Kale relies on (one multiplexed
#: connection of its own, no prompts) or run commands
FORBIDDEN_OPTIONS = ("controlmaster", "controlpath", "controlpersist", "batchmode",
                     "localcommand", "permitlocalcommand", "proxyusefdpass")


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """One site: its ``name``, SSH ``url``, Kale ``home`` there (``~`` is the remote
    user's home), the ``python`` that runs Kale there, and extra ssh ``options``
    (``Key=Value``, as ``ssh -o`` takes)."""

    name: str
    url: str
    home: str = "~/.kale"
    python: str = "python3"
    options: tuple[str, ...] = field(default_factory=tuple)

    @property
    def destination(self) -> str:
        """What ``ssh`` takes: ``[USER@]HOST``."""
        parts = urlsplit(self.url)
        user = f"{parts.username}@" if parts.username else ""
        return f"{user}{parts.hostname}"

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = list(self.options)
        return d


def check(config: SiteConfig) -> SiteConfig:
    """``config``, or a :class:`SiteConfigError` saying what is wrong with it."""
    if not NAME.match(config.name):
        raise SiteConfigError(config.name, "a site's name is a lower-case identifier "
                              "(letters, digits, - and _; at most 32)")
    try:
        parts = urlsplit(config.url)
        port = parts.port
    except ValueError as e:
        raise SiteConfigError(config.name, f"{config.url!r}: {e}") from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") \
            or parts.password or parts.query or parts.fragment:
        raise SiteConfigError(config.name, f"{config.url!r} is not an SSH address: give "
                              "ssh://[USER@]HOST[:PORT] (HOST may be an alias from "
                              "~/.ssh/config)")
    if port == 0 or parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        raise SiteConfigError(config.name, f"{config.url!r} is not an SSH address")
    for option in config.options:
        key = option.split("=", 1)[0].strip().lower()
        if "=" not in option or not key.isalnum():
            raise SiteConfigError(config.name, f"ssh option {option!r}: give KEY=VALUE")
        if key in FORBIDDEN_OPTIONS:
            raise SiteConfigError(config.name, f"ssh option {option!r}: Kale manages "
                                  f"{key} itself")
    for what, value in (("home", config.home), ("python", config.python)):
        if not value or "\n" in value or "\0" in value:
            raise SiteConfigError(config.name, f"--{what} must be a path")
    return config


def _path(home: str | Path | None) -> Path:
    return kale_home(home) / SITES_FILE


def load(home: str | Path | None = None) -> dict[str, SiteConfig]:
    """Every site, by name."""
    path = _path(home)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise SiteConfigError("*", f"{path} cannot be read: {e}") from None
    sites = {}
    for name, entry in dict(doc.get("sites", {})).items():
        entry = {**entry, "name": name, "options": tuple(entry.get("options", ()))}
        sites[name] = SiteConfig(**entry)
    return sites


def get(name: str, home: str | Path | None = None) -> SiteConfig:
    """The site ``name``, or a :class:`SiteConfigError` that lists the defined ones."""
    sites = load(home)
    if name not in sites:
        known = ", ".join(sorted(sites)) or "none yet: `kale site add NAME ssh://HOST`"
        raise SiteConfigError(name, f"no such site (defined: {known})")
    return sites[name]


def save(config: SiteConfig, home: str | Path | None = None) -> None:
    """Add ``config`` (or replace the site of that name)."""
    sites = load(home)
    sites[config.name] = check(config)
    _write(sites, home)


def remove(name: str, home: str | Path | None = None) -> bool:
    """Forget a site; False if there was none of that name."""
    sites = load(home)
    if sites.pop(name, None) is None:
        return False
    _write(sites, home)
    return True


def _write(sites: dict[str, SiteConfig], home: str | Path | None) -> None:
    path = _path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"sites": {n: {k: v for k, v in c.to_json().items() if k != "name"}
                     for n, c in sorted(sites.items())}}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
