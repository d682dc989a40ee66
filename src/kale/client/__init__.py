"""Clients: the embedded local client and the Run handle (a manager client comes later)."""
