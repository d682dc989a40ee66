"""A third-party transfer plug-in, the way one for Globus would be shaped: the transfer
'localcp' copies between directories of this machine (shutil), each file written under
a temporary dot-name and renamed into place once whole, unchanged files (same size and
modification time) skipped. tests/test_transfers.py puts this directory on PYTHONPATH,
which installs it (the dist-info beside it registers the entry point)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from kale.transfers import Endpoint, Transfer, TransferError, TransferReport, check_paths


class LocalCopyTransfer(Transfer):
    """Copies between local directories only."""

    name = "localcp"

    def copy(self, src: Endpoint, dst: Endpoint, paths: Sequence[str] | None = None,
             log: TextIO | None = None) -> TransferReport:
        start = time.monotonic()
        for end in (src, dst):
            if end.remote:
                raise TransferError(f"{self.name} copies on this machine only, not {end}",
                                    endpoint=end)
        root = Path(src.path)
        if not root.is_dir():
            raise TransferError(f"no such directory at the source: {src}", endpoint=src)
        files = sent = 0
        for top in check_paths(paths) or ["."]:
            base = root / top
            if not base.exists():
                raise TransferError(f"no such file at the source {src}: {top}", endpoint=src)
            found = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
            for path in found:
                rel = path.relative_to(root)
                target = Path(dst.path) / rel
                st = path.stat()
                if target.exists() and (target.stat().st_size, int(target.stat().st_mtime)) \
                        == (st.st_size, int(st.st_mtime)):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                temp = target.with_name(f".{target.name}.part")
                shutil.copy2(path, temp)
                os.replace(temp, target)
                files, sent = files + 1, sent + st.st_size
                if log is not None:
                    log.write(f"copied {rel}\n")
        return TransferReport(files, sent, time.monotonic() - start, self.name)
