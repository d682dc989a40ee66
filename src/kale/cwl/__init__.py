"""The Common Workflow Language, in and out (docs/cwl.md).

Out: :func:`kale.cwl.export.dump_cwl` writes a workflow as one CWL v1.2 document (shell
tasks as CommandLineTools, Python and notebook tasks as tools that run them through Kale's
own task runners with ``python -m kale.cwl.task``, the DAG as a Workflow). In: the import
modules of this package read CWL workflows of CommandLineTools into Kale workflows.
"""
