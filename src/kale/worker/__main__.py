"""``python -m kale.worker ...`` is ``kale worker ...`` (how the manager starts local ones)."""

import sys

from kale.cli.main import main

sys.argv[1:1] = ["worker"]
main()
