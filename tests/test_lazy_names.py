"""The lazy names of ``kale.model`` and ``kale.spec`` (``kale._lazy``)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from kale._lazy import lazy_getattr


def test_a_name_is_imported_on_first_use_and_then_kept() -> None:
    module = types.ModuleType("pkg")
    namespace = vars(module)
    getattr_ = lazy_getattr(namespace, {"dumps": "json"})
    import json

    assert getattr_("dumps") is json.dumps
    assert namespace["dumps"] is json.dumps  # kept: the next lookup does not come back


def test_an_unknown_name_is_the_same_error_as_before() -> None:
    import kale.model
    import kale.spec

    with pytest.raises(AttributeError, match=r"^module 'kale.model' has no attribute 'nope'$"):
        kale.model.nope  # noqa: B018
    with pytest.raises(AttributeError, match=r"^module 'kale.spec' has no attribute 'nope'$"):
        kale.spec.nope  # noqa: B018
    assert not hasattr(kale.model, "nope")


def test_the_packages_names_resolve_to_their_modules() -> None:
    code = ("import kale.model as m, kale.spec as s, sys\n"
            "from kale.model.states import RunState\n"
            "assert m.RunState is RunState and 'kale.model.workflow' not in sys.modules\n"
            "from kale.model.workflow import Workflow\n"
            "from kale.spec.loader import load_workflow\n"
            "assert m.Workflow is Workflow and s.load_workflow is load_workflow\n"
            "assert 'Workflow' in vars(m) and sorted(m.__all__) == m.__all__\n"
            "assert all(hasattr(m, n) for n in m.__all__)\n"
            "assert all(hasattr(s, n) for n in s.__all__)\n")
    subprocess.run([sys.executable, "-c", code], check=True)

