"""The user code a process has loaded: the files of its modules that are neither the
standard library, nor installed packages (site-packages, dist-packages), nor Kale itself.

Two promises rest on this (see docs/reuse in the README):

* a warm process (a Python worker, a kernel) never runs a task with code older than what is
  on disk: before each task it calls :func:`stale` on what it has loaded, and is replaced
  when anything changed;
* a reused result is the result of the code on disk now: each result is stored with the
  :func:`loaded` manifest of the process that made it (path -> content hash), and is reused
  only while every one of those files still has that content (:func:`stale`).

Hashes are memoised by (path, size, mtime, ctime, inode), so checking costs one ``stat``
per file. The module is self-contained (standard library only): kernels import it too.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType

_memo: dict[str, tuple[tuple[int, int, int, int], str, int]] = {}  # path -> stat, hash, size
_seen: dict[str, str] = {}  # file -> its hash when this process first saw it loaded
_kind: dict[str, bool] = {}  # file -> is it user code


def _system_prefixes() -> tuple[str, ...]:
    paths: set[str] = set()
    for scheme_key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(scheme_key)
        if p:
            paths.add(p)
    for getter in (site.getsitepackages, site.getusersitepackages):
        try:
            got = getter()
        except Exception:  # virtualenv's old site.py lacks them
            continue
        paths.update([got] if isinstance(got, str) else got)
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.add(os.path.join(prefix, "lib"))
        paths.add(os.path.join(prefix, "lib64"))
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # kale itself
    return tuple(sorted(os.path.join(os.path.realpath(p), "") for p in paths if p))


_SYSTEM: tuple[str, ...] | None = None


def is_user_file(path: str) -> bool:
    """True for a module file that belongs to the user, not to Python or a package."""
    known = _kind.get(path)
    if known is not None:
        return known
    global _SYSTEM
    if _SYSTEM is None:
        _SYSTEM = _system_prefixes()
    real = os.path.realpath(path)
    user = (not real.startswith(_SYSTEM) and "/site-packages/" not in real
            and "/dist-packages/" not in real and os.path.isfile(real))
    _kind[path] = user
    return user


def _module_files(modules: Iterable[ModuleType]) -> set[str]:
    files = set()
    for m in modules:
        f = getattr(m, "__file__", None)
        if isinstance(f, str) and f and is_user_file(f):
            real = _real.get(f)
            if real is None:
                real = _real[f] = os.path.realpath(f)
            files.add(real)
    return files


_real: dict[str, str] = {}  # a user module's file -> its real path
#: the modules :func:`loaded` last looked at, and the user files among them: a warm worker
#: asks before and after every task, and its modules rarely change in between
_last: tuple[list[ModuleType], list[str]] = ([], [])


def _loaded_files() -> list[str]:
    """The user files of the modules in ``sys.modules``, sorted; looked at again only when
    a module was added, removed or replaced (one identity compare of the list)."""
    global _last
    mods = list(sys.modules.values())
    if mods != _last[0]:
        _last = (mods, sorted(_module_files(mods)))
    return _last[1]


def content_hash(data: bytes) -> str:
    """What a manifest records of a file: the hash of its content."""
    return hashlib.sha256(data).hexdigest()[:32]


def file_hash(path: str) -> str | None:
    """Content hash of a file (memoised by its stat), or None when it is gone."""
    got = _hashed(path)
    return None if got is None else got[0]


def _hashed(path: str) -> tuple[str, int] | None:
    """A file's content hash and the size of the very content hashed (memoised by its
    stat: one ``stat`` when the file has not changed), or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    hit = _memo.get(path)
    if hit is not None and hit[0] == sig:
        return hit[1], hit[2]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    digest = content_hash(data)
    _memo[path] = (sig, digest, len(data))
    return digest, len(data)


def loaded(modules: Iterable[ModuleType] | None = None) -> dict[str, str]:
    """Manifest of the user code loaded in this process: file path -> content hash as the
    file was when this process first saw the module loaded (so ``stale(loaded())`` tells
    whether this process runs code older than the files on disk)."""
    files = _loaded_files() if modules is None else sorted(_module_files(list(modules)))
    out = {}
    for path in files:
        h = _seen.get(path)
        if h is None:
            h = file_hash(path)
            if h is None:
                continue
            _seen[path] = h
        out[path] = h
    return out


def stale(manifest: Mapping[str, str]) -> list[str]:
    """The files of a manifest whose content on disk is no longer what it recorded."""
    return [p for p, h in manifest.items() if file_hash(p) != h]


def guard_bytecode() -> None:
    """Make this process's cached bytecode (``__pycache__``) of user modules valid only for
    the source content it was compiled from. Python checks a ``.pyc`` against its source's
    mtime in whole seconds and size, so a file edited within the same second to the same
    size would run its old code; here the "mtime" Python compares is a hash of the content.
    That hash is also what :func:`loaded` reports for the file: the content as imported,
    not as it is when the task ends. Installed in every process that runs tasks (Python
    workers, kernels)."""
    from importlib.machinery import SourceFileLoader

    original = SourceFileLoader.path_stats
    if getattr(original, "_kale", False):
        return

    def path_stats(self: SourceFileLoader, path: str) -> Mapping[str, object]:
        stats = original(self, path)
        if is_user_file(path):
            digest = file_hash(path)
            if digest is not None:
                stats = {**stats, "mtime": int(digest[:8], 16)}
                # what is imported now is this content: a task that runs for an hour
                # while the file is edited made its result with this one
                _seen[_real.get(path) or os.path.realpath(path)] = digest
        return stats

    path_stats._kale = True  # type: ignore[attr-defined]
    SourceFileLoader.path_stats = path_stats  # type: ignore[method-assign]


def named_files(command: str | Sequence[str]) -> dict[str, str]:
    """Manifest of the files a shell command names by absolute path (``python
    /home/me/analyse.py``, ``--config=/home/me/run.toml``): the code and inputs it claims, so
    a result is not reused once one of them changed. (Paths hidden in variables or made at
    run time cannot be seen.) The files the command line itself writes (a redirection's
    target, a ``tee``'s files) are its outputs: not named."""
    return {path: digest for path, (digest, _) in snapshot(command).items()}


def snapshot(command: str | Sequence[str]) -> dict[str, tuple[str, int]]:
    """The files a shell command names (:func:`named_files`) with their content hash and
    the size of the content hashed: what the command starts with."""
    out = {}
    for words in _commands(command):
        for token in words:
            for part in token.split("="):
                if not part.startswith(("/", "~")) or any(c in part for c in "*?[$`"):
                    continue
                path = os.path.expanduser(part)
                if path not in out and os.path.isfile(path):
                    got = _hashed(path)
                    if got is not None:
                        out[path] = got
    return out


#: suffixes of code and configuration: such a named file that changed while its task ran
#: was edited, never written by the task (see :func:`grown_output`)
_SOURCE_SUFFIXES = frozenset((
    ".py", ".pyw", ".pyx", ".ipynb", ".sh", ".bash", ".zsh", ".ksh", ".csh", ".fish",
    ".r", ".jl", ".pl", ".pm", ".rb", ".js", ".mjs", ".ts", ".lua", ".tcl", ".m", ".awk",
    ".sed", ".c", ".h", ".cc", ".cpp", ".f", ".f90", ".java", ".go", ".rs", ".mk",
    ".yaml", ".yml", ".toml", ".json", ".ini", ".cfg", ".conf", ".env", ".xml", ".nml"))


def grown_output(path: str, was: str, size: int) -> bool:
    """Whether a named file that changed while its task ran was written by the task (a
    log or ledger it appends to, named as ``--log=/scratch/me/ledger``): it only grew (its
    first ``size`` bytes still hash to ``was``) and it is no code or configuration (no
    such suffix, no execute bit). Any other change is an edit: the task keeps the
    version it started with, so the edited file is not given this result."""
    if os.path.splitext(path)[1].lower() in _SOURCE_SUFFIXES:
        return False
    try:
        st = os.stat(path)
        if st.st_mode & 0o111 or st.st_size <= size:
            return False
        with open(path, "rb") as f:
            head = f.read(size)
    except OSError:
        return False
    return content_hash(head) == was


#: shell redirections that write the file after them (``>> /scratch/me/log``)
_WRITES = frozenset((">", ">>", ">|", ">&", "&>", "&>>"))  # (``2>``: ``2``, ``>``)


def _commands(command: str | Sequence[str]) -> list[list[str]]:
    """The commands of a shell line (split at newlines, ``;``, ``|``, ``&&``...) as their
    words, without the files the line writes (a redirection's target, the files of a
    ``tee`` in command position). An argv list is one command."""
    if not isinstance(command, str):
        return [list(command)]
    lexer = shlex.shlex(command, posix=True, punctuation_chars="();<>|&\n")
    lexer.whitespace = " \t\r"  # a newline ends a command: not mere space
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell will say so
        tokens = command.split()
    out: list[list[str]] = [[]]
    for i, token in enumerate(tokens):
        if token in _WRITES or (i and tokens[i - 1] in _WRITES):
            continue  # (the redirection, and the file it writes)
        if token and set(token) <= set("();<>|&\n"):
            out.append([])  # a command ends
            continue
        words = out[-1]
        if words and os.path.basename(words[0]) == "tee" and not token.startswith("-"):
            continue  # a file tee writes
        words.append(token)
    return [words for words in out if words]


def kernel_snippet() -> str:
    """Code that prints this process's manifest as JSON, for a kernel to run."""
    return ("import json as _j\n"
            "try:\n"
            "    from kale.tasks.usercode import loaded as _l\n"
            "    print(_j.dumps(_l()))\n"
            "except ImportError:\n"
            "    print('null')\n")
