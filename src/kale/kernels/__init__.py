"""Kernels of running tasks: attaching to them (from Python, a console, JupyterLab)."""
