"""Task runners, one per kind (shell, python, notebook), registered through the
``kale.task_kinds`` entry point (:mod:`kale.tasks.registry`), so a plug-in package adds a
kind the same way."""
