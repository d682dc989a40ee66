"""Copying files between this machine and hosts reached over ssh, or between two such
hosts: the interface (:mod:`.base`), Kale's rsync (:mod:`.rsync`), and the registry of
transfers (:func:`get`), plug-ins included (entry point ``kale.transfers``).

Below the engine: imports only :mod:`kale.errors`, :mod:`kale.plugins` and the standard
library."""

from kale.transfers.base import Endpoint, Transfer, TransferError, TransferReport, check_paths
from kale.transfers.registry import get, names

__all__ = ["Endpoint", "Transfer", "TransferError", "TransferReport", "check_paths", "get",
           "names"]
