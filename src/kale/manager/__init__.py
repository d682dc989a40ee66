"""The Kale manager: one service per user that hosts the engine and serves the store over
an authenticated HTTP API (FastAPI). Runs submitted to it outlive the notebook or shell
that submitted them."""
