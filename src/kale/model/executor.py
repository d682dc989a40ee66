"""Where tasks run: the ``executor:`` of a workflow or a task.

``local`` runs tasks on this machine (in the engine's process, or in the manager's local
workers). The name of a batch scheduler (one of the ``kale.schedulers`` registry,
:func:`batch_kinds`: Kale's ``slurm``, ``pbs``, ``lsf``, ``flux``, ``cobalt`` and any
installed as a plug-in) runs them through that scheduler, in one of two modes:

- ``job`` (the default): one batch job per task, sized by the task's ``resources``;
- ``pilot``: batch jobs that each run a Kale worker, which runs many tasks. The manager
  sizes the pilots from the backlog within the limits given here and idle pilots end.

In YAML: ``executor: slurm``, or a mapping such as
``{kind: slurm, mode: pilot, nodes: 1, walltime: "00:30:00", queue: debug, max_jobs: 2}``.

How Kale reaches the scheduler (``via``): ``cli``, its commands on PATH (the default), or,
for Slurm, ``rest``: its REST API (slurmrestd, JWT auth), for where the Slurm commands are
not installed: ``{kind: slurm, via: rest, url: "http://host:6820", token_file:
"~/.slurm-token"}``, with ``token_command`` (an argv list, such as ``[scontrol, token,
lifespan=600]``) to get a fresh token when the current one expires (:class:`RestAccess`).

An existing workflow engine (the ``kale.engines`` registry, :func:`engine_kinds`: Kale's
``dask`` and ``parsl``) runs tasks on its own workers while Kale keeps the state, reuse and
views:

- ``dask``: ``{kind: dask, address: "tls://scheduler:8786", security: {ca: ca.pem, cert:
  client.pem, key: client.key}}`` (a running cluster, over TLS: its CA proves the
  scheduler, the client certificate proves Kale; ``security`` may be left to Dask's own
  ``distributed.comm.tls`` configuration), or
  ``{kind: dask, cluster: "dask_jobqueue:SLURMCluster", options: {cores: 4}, scale: 2}``
  (a cluster class Kale starts with those keyword arguments, scales, and closes at the
  end); plain ``dask`` starts a ``distributed:LocalCluster``;
- ``parsl``: ``{kind: parsl, config: "site_config:config"}``, a ``parsl.Config`` (or a
  function returning one) given as ``module:name`` or ``file.py:name``; plain ``parsl``
  uses a local HighThroughputExecutor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kale import plugins
from kale.model.resources import walltime_seconds

#: the executor that is not a batch scheduler
LOCAL = "local"
MODES = ("job", "pilot")
#: pilot settings: the allocation of each pilot job, and the limits of the elastic pool
PILOT_KEYS = ("nodes", "walltime", "queue", "account", "options", "slots", "max_jobs",
              "max_nodes", "idle")
#: how the scheduler is reached (``via: rest`` and its endpoint)
ACCESS_KEYS = ("via", "url", "token_file", "token_command")
#: settings of an engine: Dask's scheduler address or cluster class (with its keyword
#: arguments in ``options`` and its number of workers in ``scale``), the TLS files that reach
#: a running Dask cluster (``security``), Parsl's config
ENGINE_KEYS = ("address", "security", "cluster", "scale", "config")
#: the files of ``security``: the CA that signed the scheduler's certificate, Kale's own
#: certificate and key
SECURITY_KEYS = ("ca", "cert", "key")
EXECUTOR_KEYS = ("kind", "mode", *PILOT_KEYS, *ACCESS_KEYS, *ENGINE_KEYS)
#: ways to reach a scheduler: its commands, or (Slurm) its REST API
VIA = ("cli", "rest")
#: the schedulers Kale reaches through a REST API
REST_KINDS = ("slurm",)
PILOT_DEFAULTS: dict[str, Any] = {"nodes": 1, "walltime": "01:00:00", "max_jobs": 4,
                                  "max_nodes": 4, "idle": 30}


def batch_kinds() -> tuple[str, ...]:
    """The batch schedulers: the ``kale.schedulers`` registry (:mod:`kale.plugins`)."""
    return tuple(n for n in plugins.names(plugins.SCHEDULERS) if n != LOCAL)


def engine_kinds() -> tuple[str, ...]:
    """The workflow engines tasks may run on: the ``kale.engines`` registry."""
    return plugins.names(plugins.ENGINES)


def executor_kinds() -> tuple[str, ...]:
    """Every executor name: ``local``, the batch schedulers, then the engines."""
    return (LOCAL, *batch_kinds(), *engine_kinds())


@dataclass(frozen=True, slots=True)
class RestAccess:
    """A scheduler's REST endpoint (``via: rest``): its URL, and where Slurm JWTs come from
    (``token_file``, re-read when it changes; ``token_command``, run for a fresh one). At
    least one of the two is set (:meth:`ExecutorSpec.problems` says so otherwise)."""

    url: str
    token_file: str | None = None
    token_command: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "token_file": self.token_file,
                "token_command": list(self.token_command) if self.token_command else None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RestAccess:
        command = doc.get("token_command")
        return cls(str(doc["url"]), doc.get("token_file"),
                   tuple(command) if command else None)


@dataclass(slots=True)
class ExecutorSpec:
    """Where tasks run: ``kind`` is :data:`LOCAL` or a batch scheduler's name."""

    kind: str = LOCAL
    mode: str = "job"
    #: pilot settings (:data:`PILOT_KEYS`; ignored in job mode, where the task's own
    #: ``resources`` size its job) and how the scheduler is reached (:data:`ACCESS_KEYS`)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> bool:
        return self.kind in batch_kinds()

    @property
    def engine(self) -> bool:
        """Tasks run on another workflow engine's workers (Dask, Parsl)."""
        return self.kind in engine_kinds()

    @property
    def pilot(self) -> bool:
        return self.batch and self.mode == "pilot"

    @property
    def via(self) -> str:
        return str(self.options.get("via") or "cli")

    @property
    def rest(self) -> RestAccess | None:
        """The REST endpoint when ``via: rest`` (and the spec is valid), else None."""
        if self.via != "rest" or not isinstance(self.options.get("url"), str):
            return None
        command = self.options.get("token_command")
        return RestAccess(self.options["url"], self.options.get("token_file"),
                          tuple(command) if isinstance(command, list) and command else None)

    def setting(self, key: str) -> Any:
        """A pilot setting, or its default."""
        return self.options.get(key, PILOT_DEFAULTS.get(key))

    def to_value(self) -> str | dict[str, Any]:
        """The YAML form: just the name when nothing else is set."""
        if self.mode == "job" and not self.options:
            return self.kind
        out: dict[str, Any] = {"kind": self.kind}
        if self.mode != "job":
            out["mode"] = self.mode
        out.update(self.options)
        return out

    @classmethod
    def parse(cls, value: Any) -> tuple[ExecutorSpec, list[tuple[tuple[str, ...], str]]]:
        """From ``"slurm"`` or a mapping; returns the spec and ``(path, message)``
        problems (the path below ``executor``)."""
        if isinstance(value, ExecutorSpec):
            return value, value.problems()
        if isinstance(value, str):
            spec = cls(value)
            return spec, spec.problems()
        if not isinstance(value, dict):
            return cls(), [((), "must be an executor name or a mapping with 'kind'")]
        problems: list[tuple[tuple[str, ...], str]] = []
        for k in value:
            if k not in EXECUTOR_KEYS:
                problems.append(((str(k),), f"unknown key {k!r}; allowed: "
                                 + ", ".join(EXECUTOR_KEYS)))
        options = {k: v for k, v in value.items() if k in EXECUTOR_KEYS and k not in
                   ("kind", "mode")}
        spec = cls(value.get("kind", LOCAL), value.get("mode") or "job", options)
        return spec, problems + spec.problems()

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        out: list[tuple[tuple[str, ...], str]] = []
        if self.kind not in executor_kinds():
            out.append((("kind",), f"unknown executor {self.kind!r}; known: "
                        + ", ".join(executor_kinds())))
        if self.mode not in MODES:
            out.append((("mode",), f"must be 'job' or 'pilot', got {self.mode!r}"))
        elif self.mode == "pilot" and not self.batch:
            out.append((("mode",), "pilot mode needs a batch scheduler as 'kind' "
                        f"({', '.join(batch_kinds())})"))
        if self.engine:
            return out + self._engine_problems()
        out.extend(((k,), f"only for an engine ({', '.join(engine_kinds())})")
                   for k in ENGINE_KEYS if k in self.options)
        for k in ("nodes", "slots", "max_jobs", "max_nodes"):
            v = self.options.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                out.append(((k,), f"must be an integer >= 1, got {v!r}"))
        idle = self.options.get("idle")
        if idle is not None and (not isinstance(idle, int | float) or isinstance(idle, bool)
                                 or idle < 0):
            out.append((("idle",), f"must be a number of seconds >= 0, got {idle!r}"))
        wt = self.options.get("walltime")
        if wt is not None:
            try:
                walltime_seconds(str(wt))
            except ValueError as e:
                out.append((("walltime",), str(e)))
        for k in ("queue", "account"):
            v = self.options.get(k)
            if v is not None and not isinstance(v, str):
                out.append(((k,), f"must be a string, got {v!r}"))
        opts = self.options.get("options")
        if opts is not None and (not isinstance(opts, list)
                                 or not all(isinstance(o, str) for o in opts)):
            out.append((("options",), "must be a list of strings"))
        return out + self._access_problems()

    def _engine_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """What is wrong with an engine's settings (and the keys it does not take)."""
        own = {"dask": ("address", "security", "cluster", "options", "scale"),
               "parsl": ("config",)}
        allowed = own.get(self.kind, (*ENGINE_KEYS, "options"))
        out: list[tuple[tuple[str, ...], str]] = [
            ((k,), f"not a setting of {self.kind!r}; allowed: {', '.join(allowed)}")
            for k in self.options if k not in allowed]
        if "address" in self.options and "cluster" in self.options:
            out.append(((), "give 'address' (a running Dask cluster) or 'cluster' (one Kale "
                        "starts), not both"))
        out.extend(self._address_problems())
        for k, example in (("cluster", "dask_jobqueue:SLURMCluster"),
                           ("config", "site_config:config")):
            v = self.options.get(k)
            if v is not None and (not isinstance(v, str) or not _target(v)):
                out.append(((k,), f"must be 'module:name' or 'file.py:name', such as "
                            f"{example!r}, got {v!r}"))
        opts = self.options.get("options")
        if opts is not None and not (isinstance(opts, dict)
                                     and all(isinstance(k, str) for k in opts)):
            out.append((("options",), "must be a mapping of the cluster's keyword arguments"))
        scale = self.options.get("scale")
        if scale is not None and (not isinstance(scale, int) or isinstance(scale, bool)
                                  or scale < 0):
            out.append((("scale",), f"must be a number of workers >= 0, got {scale!r}"))
        return out

    def _address_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """What is wrong with a running Dask cluster's address and TLS files: only
        ``tls://`` (over plain ``tcp://`` another user of the host, or anyone on the
        network, who answers at that address receives the tasks and sends back results
        Kale unpickles)."""
        out: list[tuple[tuple[str, ...], str]] = []
        address, security = self.options.get("address"), self.options.get("security")
        if address is not None and (not isinstance(address, str) or "://" not in address):
            out.append((("address",), "must be a scheduler address such as "
                        f"tls://host:8786, got {address!r}"))
        elif isinstance(address, str) and not address.startswith("tls://"):
            out.append((("address",), f"{address!r}: only a tls:// address is reached (over "
                        f"{address.split('://')[0]}:// whoever answers at that address, "
                        "another user of this host or anyone on the network, receives the "
                        "tasks and sends back what Kale unpickles); start the scheduler "
                        "with TLS and give tls://host:port with security: {ca, cert, key}"))
        if security is None:
            return out
        if address is None:
            out.append((("security",), "only with 'address' (a cluster Kale starts takes "
                        "its security in 'options')"))
        if not isinstance(security, dict):
            return [*out, (("security",), "must be a mapping of TLS files: ca, cert, key")]
        out.extend((("security", str(k)), f"not a TLS file Kale takes; allowed: "
                    f"{', '.join(SECURITY_KEYS)}") for k in security if k not in SECURITY_KEYS)
        out.extend((("security", k), f"must be a file name, got {v!r}")
                   for k, v in security.items()
                   if k in SECURITY_KEYS and (not isinstance(v, str) or not v))
        missing = [k for k in SECURITY_KEYS if k not in security]
        if missing:
            out.append((("security",), f"give {', '.join(missing)} too: Dask's TLS proves "
                        "both sides (the CA, the scheduler; Kale's certificate and key, "
                        "Kale)"))
        return out

    def _access_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """What is wrong with ``via`` and the REST endpoint's settings."""
        out: list[tuple[tuple[str, ...], str]] = []
        via = self.options.get("via")
        given = [k for k in ACCESS_KEYS[1:] if k in self.options]
        if via is not None and via not in VIA:
            out.append((("via",), f"must be 'cli' (the scheduler's commands) or 'rest' "
                        f"(its REST API), got {via!r}"))
            return out
        if via != "rest":
            out.extend(((k,), "only with 'via: rest' (the scheduler's REST API)")
                       for k in given)
            return out
        if self.kind not in REST_KINDS:
            out.append((("via",), f"'via: rest' is for {', '.join(REST_KINDS)} (slurmrestd); "
                        f"{self.kind!r} is reached through its commands"))
        url = self.options.get("url")
        if "url" not in self.options:
            out.append((("url",), "'via: rest' needs the REST API's url, such as "
                        "http://slurm.example.org:6820"))
        elif not _http_url(url):
            out.append((("url",), f"must be an http:// or https:// URL with a host, "
                        f"got {url!r}"))
        token_file = self.options.get("token_file")
        if "token_file" in self.options and (not isinstance(token_file, str)
                                             or not token_file.strip()):
            out.append((("token_file",), f"must be a file name, got {token_file!r}"))
        command = self.options.get("token_command")
        if "token_command" in self.options and (not isinstance(command, list) or not command
                                                or not all(isinstance(c, str) and c
                                                           for c in command)):
            out.append((("token_command",), "must be a command as a non-empty list of "
                        "strings, such as [scontrol, token, lifespan=600]"))
        if "token_file" not in self.options and "token_command" not in self.options:
            out.append(((), "'via: rest' needs token_file (a file holding a Slurm JWT) or "
                        "token_command (a command printing one), or both"))
        return out


def _target(value: str) -> bool:
    """``module:name`` or ``file.py:name``, with a name that is a Python identifier path."""
    where, _, name = value.rpartition(":")
    return bool(where.strip()) and all(p.isidentifier() for p in name.split("."))


def _http_url(url: Any) -> bool:
    """True for an http(s) URL with a host."""
    from urllib.parse import urlsplit

    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url.strip())
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok
