"""Task runners, one per kind (shell, python, notebook), registered through the
``kale.task_kinds`` entry point so plug-ins add kinds the same way."""
