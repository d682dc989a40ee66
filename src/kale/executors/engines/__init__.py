"""Existing workflow engines as executors: tasks run on a Dask cluster's or a Parsl
configuration's workers while Kale keeps the state, reuse, logs and views.

``attempt.py`` is the part that runs on the engine's worker: one process-wide host of
Kale's own task runners, so a task runs there exactly as under ``LocalExecutor``;
``dask.py`` and ``parsl.py`` are the executors (registered in the ``kale.engines``
entry-point group); ``targets.py`` imports what a spec names (``module:name``)."""
