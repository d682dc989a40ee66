"""The dashboard widgets' Python side, against a real manager, real workers and (for the
queue and pilots) the real Slurm cluster: what each view holds is what the browser
draws (tests/test_dashboard_lab.py checks the drawing itself)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kale.widgets as kw
from conftest import Kale, Manager, busy_py, gate_sh, process_alive, wait_until
from kale import Workflow
from kale.model.display import COLORS
from kale.widgets import dag as dag_module
from kale.widgets.dag import PAGE, Members
from kale.widgets.groups import collapse, similar, sort_key, template
from kale.widgets.layout import MAX_ROW, NODE_H, NODE_W, dag_svg, layers, layout
from kale.widgets.resources import BUCKET, Summed, box_of

STATIC = Path(kw.__file__).with_name("static")
# The live views' waits are safety nets of a minute or two each; together they may exceed
# the default 120 s per test on a loaded machine.
pytestmark = pytest.mark.timeout(300)


# -- layout and pictures (pure) -------------------------------------------------------------
def test_layout_puts_each_task_below_what_it_waits_for_without_overlap() -> None:
    up = {"fetch": [], "a": ["fetch"], "b": ["fetch"], "c": ["fetch"], "join": ["a", "b", "c"],
          "late": ["join", "fetch"]}
    assert layers(up) == [["fetch"], ["a", "b", "c"], ["join"], ["late"]]
    backwards = dict(reversed(up.items()))  # declared before what it waits for
    assert layers(backwards) == [["fetch"], ["c", "b", "a"], ["join"], ["late"]]
    lay = layout(up)
    for name, ups in up.items():
        for u in ups:
            assert lay.pos[u][1] + NODE_H < lay.pos[name][1], (u, name)
    boxes = sorted(lay.pos.values())
    for (x1, y1), (x2, y2) in itertools.pairwise(boxes):
        assert y1 != y2 or x2 - x1 >= NODE_W, "boxes overlap"
    assert all(x >= 0 and x + NODE_W <= lay.width for x, _ in lay.pos.values())
    assert sorted(lay.edges) == sorted((u, n) for n, ups in up.items() for u in ups)


def test_a_wide_layer_wraps_and_a_thousand_tasks_lay_out() -> None:
    up: dict[str, list[str]] = {"root": []} | {f"t{i}": ["root"] for i in range(1000)}
    lay = layout(up)
    rows = {y for name, (_, y) in lay.pos.items() if name != "root"}
    assert len(rows) == -(-1000 // MAX_ROW)  # wrapped into rows of at most MAX_ROW
    assert len(lay.pos) == 1001 and lay.width < (MAX_ROW + 1) * (NODE_W + 20)


def test_the_static_svg_colours_each_task_by_state_and_escapes_names() -> None:
    svg = dag_svg({"a": [], "b<&>": ["a"]}, {"a": "SUCCEEDED", "b<&>": "FAILED"},
                  title="report <1>")
    assert svg.startswith("<svg") and svg.count('class="kale-node"') == 2
    assert re.search(r'data-task="a" data-state="SUCCEEDED".*?fill="' + COLORS["SUCCEEDED"], svg)
    assert 'data-task="b&lt;&amp;&gt;" data-state="FAILED"' in svg
    assert "report &lt;1&gt;" in svg and "<&>" not in svg
    import xml.dom.minidom

    xml.dom.minidom.parseString(svg)  # well-formed


def test_a_map_is_one_box_with_its_counts_and_a_condition_skip_is_dashed() -> None:
    import xml.dom.minidom

    up: dict[str, list[str]] = {"sim": [], "analyse": ["sim"], "sum": ["analyse"],
                                "extra": ["sim"]}
    counts = {"SUCCEEDED": 9990, "FAILED": 3, "RUNNING": 2, "PENDING": 5}
    svg = dag_svg(up, {"analyse": "RUNNING", "extra": "SKIPPED"},
                  maps={"analyse": {"total": 10_000, "counts": counts}},
                  conditions={"extra": "condition false: 0 > 0"})
    dom = xml.dom.minidom.parseString(svg)
    nodes = {g.getAttribute("data-task"): g for g in dom.getElementsByTagName("g")
             if "kale-node" in g.getAttribute("class")}
    assert set(nodes) == set(up)  # one box for the map, none per member
    box = nodes["analyse"]
    assert "kale-map" in box.getAttribute("class")
    texts = {t.getAttribute("class"): t.firstChild.data for t in box.getElementsByTagName("text")}
    assert texts == {"kale-label": "analyse \u00d710000", "kale-map-count": "9990 ✓ 3 ✗ 2 ▶ 5 …"}
    bar = {r.getAttribute("data-state"): r for r in box.getElementsByTagName("rect")
           if r.getAttribute("data-state")}
    assert list(bar) == ["SUCCEEDED", "FAILED", "RUNNING", "PENDING"]  # done first
    assert {s: int(r.getAttribute("data-count")) for s, r in bar.items()} == counts
    assert bar["FAILED"].getAttribute("fill") == COLORS["FAILED"]
    assert float(bar["FAILED"].getAttribute("width")) >= 2  # 3 in 10,000 still show
    assert sum(float(r.getAttribute("width")) for r in bar.values()) == pytest.approx(
        NODE_W - 12, abs=0.05)
    assert "a map of 10000: 9990 SUCCEEDED, 3 FAILED" in box.getElementsByTagName(
        "title")[0].firstChild.data
    (cond,) = [r for r in nodes["extra"].getElementsByTagName("rect")]
    assert cond.getAttribute("stroke-dasharray") and "kale-cond" in nodes["extra"].getAttribute(
        "class")
    assert "condition false: 0 &gt; 0" in svg
    plan = Workflow("plan", parameters={"xs": [1, 2]})  # not yet run: not yet mapped
    plan.shell("analyse", "echo $x", map={"x": "${params.xs}"})
    view = kw.DagView(plan)
    assert view.maps["analyse"]["total"] is None and "analyse \u00d7…" in view.svg
    assert "no members yet" in view.to_svg()
    view.close()


def test_members_of_a_map_of_10000_come_a_page_at_a_time() -> None:
    members = Members(["analyse"])
    assert members.set("sim", "RUNNING") is None  # a task of the workflow: no member
    assert members.set("other[2]", "RUNNING") is None  # no map of this workflow
    for i in reversed(range(10_000)):
        assert members.set(f"analyse[{i}]", "FAILED" if i % 2500 == 7 else "SUCCEEDED") \
            == "analyse"
    assert members.summary() == {"analyse": {"total": 10_000, "counts": {
        "SUCCEEDED": 9996, "FAILED": 4}, "kind": "map"}}
    page = members.page("analyse", 0)
    assert page["rows"][:2] == [[0, "analyse[0]", "SUCCEEDED"], [1, "analyse[1]", "SUCCEEDED"]]
    assert len(page["rows"]) == PAGE and page["matching"] == page["total"] == 10_000
    assert members.page("analyse", 9_950)["rows"][-1] == [9999, "analyse[9999]", "SUCCEEDED"]
    assert members.page("analyse", 50_000)["offset"] == 10_000 - PAGE  # past the end: last
    failed = members.page("analyse", 0, "FAILED")
    assert [r[0] for r in failed["rows"]] == [7, 2507, 5007, 7507] and failed["matching"] == 4
    members.set("analyse[7]", "RUNNING")  # retried
    assert members.state("analyse[7]") == "RUNNING" and members.state("analyse[x]") is None


def test_tasks_a_task_added_are_listed_under_it() -> None:
    members = Members(["analyse"], ["plan", "analyse", "report"])
    assert members.groups == ["analyse"] and members.set("report", "PENDING") is None
    for name in ("plan[refine]", "plan[refine][10]", "plan[refine][2]", "plan[check]"):
        assert members.set(name, "SUCCEEDED") == "plan"  # under the workflow's task
    assert members.set("nobody[1]", "RUNNING") is None  # under no task of the workflow
    assert members.groups == ["analyse", "plan"]
    assert members.summary()["plan"] == {"total": 4, "counts": {"SUCCEEDED": 4},
                                         "kind": "added"}
    assert members.summary()["analyse"] == {"total": None, "counts": {}, "kind": "map"}
    assert [r[:2] for r in members.page("plan", 0)["rows"]] == [
        ["[check]", "plan[check]"], ["[refine]", "plan[refine]"],
        ["[refine][2]", "plan[refine][2]"], ["[refine][10]", "plan[refine][10]"]]
    svg = dag_svg({"plan": []}, maps=members.summary())
    assert "plan +4" in svg and "added 4 tasks" in svg


def test_similar_tasks_make_one_group_and_the_graph_of_groups_keeps_its_shape() -> None:
    up: dict[str, list[str]] = {"start": [], "analyse": ["start"]}
    up |= {f"sim-{i}": ["start"] for i in range(100)}         # a fan-out of 100 replicas
    up |= {f"post-{i}": [f"sim-{i}"] for i in range(100)}     # each after its own sim
    up |= {f"c{c}-{k}": ["start" if k == 0 else f"c{c}-{k - 1}"]  # 20 chains of 3 steps
           for c in range(20) for k in range(3)}
    up |= {f"odd{i}": ["start"] for i in range(3)}             # too few to make a group
    up["gather"] = [f"post-{i}" for i in range(100)] + [f"c{c}-2" for c in range(20)]
    kinds = {n: "python" if n.startswith("post-1") else "shell" for n in up}
    group = similar(up, kinds, exclude={"analyse"})
    assert group["sim-0"] == group["sim-99"] == "sim-{0..99}"
    # post-1, post-10..19 are python: a group of their own (11 >= 10), the others shell
    assert group["post-0"] == "post-{0..99}" and group["post-12"] == "post-{1..19}"
    assert {group[f"c{c}-1"] for c in range(20)} == {"c{0..19}-1"}  # a shared number stays
    assert not {"start", "analyse", "gather", "odd0"} & set(group)
    boxes = collapse(up, group)
    assert boxes["post-{0..99}"] == ["sim-{0..99}"] and boxes["c{0..19}-2"] == ["c{0..19}-1"]
    assert boxes["gather"] == ["post-{0..99}", "post-{1..19}", "c{0..19}-2"]
    assert len(boxes) == 12 and "sim-5" not in boxes and "odd1" in boxes
    assert template("c3-5") == (("c", "-", ""), (3, 5)) and template("start") is None
    assert sorted(["sim-10", "sim-2", "sim-1"], key=sort_key) == ["sim-1", "sim-2", "sim-10"]
    # Two groups that would have the same name (here: other kinds) get told apart.
    two = similar({f"t{i}": [] for i in range(20)}, {f"t{i}": "ab"[i % 2] for i in range(20)})
    assert sorted(set(two.values())) == ["t{0..18}", "t{1..19}"]
    same = similar({f"t{i}": [] for i in range(20)} | {f"t{i}x": [] for i in range(20)},
                   {f"t{i}": "ab"[i // 10] for i in range(20)})
    assert sorted(set(same.values())) == ["t{0..19}x", "t{0..9}", "t{10..19}"]


def test_a_group_of_similar_tasks_is_one_box_with_counts_that_opens() -> None:
    wf = Workflow("fan")
    start = wf.shell("start", "true")
    sims = [wf.shell(f"sim-{i}", "true", after=start) for i in range(250)]
    wf.shell("gather", "true", after=sims)
    view = kw.DagView(wf)
    assert view.svg.count('class="kale-node') == 3  # start, the group, gather
    box = view.maps["sim-{0..249}"]
    assert box["kind"] == "similar" and box["total"] == 250 and box["state"] == "PENDING"
    assert "sim-{0..249} \u00d7250" in box["svg"] and "250 similar tasks" in box["svg"]
    view.open_map("sim-{0..249}")  # (what a click on its box does, in a run's view)
    rows = view.members["rows"]
    assert rows[:3] == [[0, "sim-0", "PENDING"], [1, "sim-1", "PENDING"],
                        [2, "sim-2", "PENDING"]] and len(rows) == PAGE
    view.member_offset = 200
    view._paged()
    assert view.members["rows"][-1] == [249, "sim-249", "PENDING"]
    assert box["counts"] == {"PENDING": 250}
    flat = kw.DagView(wf, group_similar=False)  # a box per task, as asked
    assert flat.svg.count('class="kale-node') == 252 and not flat.maps
    view.close()
    flat.close()


def test_a_maps_members_chart_as_one_line_their_sum() -> None:
    assert [box_of(n) for n in ("sim", "analyse[3]", "plan[refine]", "plan[refine][2]")] == [
        "sim", "analyse", "plan", "plan"]
    summed = Summed()
    for k in range(4):  # two members sampled four times a step, a third once
        for member, rss in (("analyse[0]", 100 + k), ("analyse[1]", 200)):
            summed.add("analyse", member, 10 * BUCKET + k * BUCKET / 4, (50.0, rss, None))
    summed.add("analyse", "analyse[2]", 10 * BUCKET, (25.0, 1000, 30.0))
    summed.add("analyse", "analyse[0]", 11 * BUCKET, (10.0, 5, None))
    line = summed.line("analyse")  # each member once a step: its latest sample there
    assert line == {"t": [10 * BUCKET, 11 * BUCKET], "cpu": [125.0, 10.0],
                    "rss": [103 + 200 + 1000, 5], "gpu": [30.0, None]}


def test_a_workflow_not_yet_run_draws_and_exports(tmp_path: Path) -> None:
    wf = Workflow("plan")
    a = wf.shell("a", "true")
    wf.shell("b", "true", after=a)  # one upstream task, not a list
    view = kw.DagView(wf)
    assert view.title == "plan" and view.svg.count("kale-node") == 2
    assert view.to_svg(tmp_path / "plan.svg").count('data-state="PENDING"') == 2
    png = view.to_png(tmp_path / "plan.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    view._on_custom(view, {"action": "retry_failed"}, [])
    assert "run it first" in view.error  # a message in the widget, not a traceback


def test_widget_assets_ship_in_the_package_and_fetch_nothing() -> None:
    names = {p.name for p in STATIC.iterdir()}
    assert {"common.js", "dag.js", "log.js", "resources.js", "queue.js", "workers.js",
            "runs.js", "login.js", "kale.css"} <= names
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        urls = {u for u in urls if not u.startswith(("http://127.0.0.1", "https://127.0.0.1"))}
        assert not urls, f"{path.name} refers to the network: {urls}"
        assert "import " not in text.split("export default")[0].replace("important", ""), \
            f"{path.name} imports a module (must be self-contained)"


def test_the_public_api_exports_what_it_says() -> None:
    import anywidget
    import ipywidgets

    views = {"DagView", "LogView", "ResourceView", "QueueView", "WorkersView", "RunsView",
             "Login"}
    assert views | {"Dashboard"} <= set(kw.__all__)
    for name in views:  # each a widget of its own, described where the package says what it has
        assert issubclass(getattr(kw, name), anywidget.AnyWidget), name
        assert f":class:`{name}`" in (kw.__doc__ or ""), name
    assert issubclass(kw.Dashboard, ipywidgets.Box)
    assert sorted(kw.__all__) == kw.__all__ and all(hasattr(kw, n) for n in kw.__all__)


# -- live views of real runs ----------------------------------------------------------------
def demo(tmp_path: Path, name: str = "demo") -> Workflow:
    marker = tmp_path / f"{name}.marker"
    wf = Workflow(name, base_dir=tmp_path)
    prep = wf.shell("prep", "echo preparing; sleep 0.3; echo ready",
                    description="**Prepare** <script>alert(1)</script>")
    flaky = wf.shell("flaky", f"test -e {marker} || {{ touch {marker}; echo no >&2; exit 4; }}"
                              "; echo fine", after=prep, parameters={"n": 3})
    wf.shell("last", "echo done", after=flaky)
    return wf


def settled(view: kw.DagView, **states: str) -> bool:
    return all(view.states.get(k) == v for k, v in states.items())


def test_dagview_follows_a_run_shows_details_and_retries_what_failed(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(demo(tmp_path))
        view = kw.DagView(run)
        assert view.run_id == run.id and set(view.states) == {"prep", "flaky", "last"}
        wait_until(lambda: settled(view, prep="SUCCEEDED", flaky="FAILED", last="SKIPPED"),
                   what="the states to arrive through the event stream")
        wait_until(lambda: view.run_state == "FAILED", what="the run's end")
        assert view.counts == {"SUCCEEDED": 1, "FAILED": 1, "SKIPPED": 1}

        view.focus = "flaky"  # what a click does
        d = view.detail
        assert d["name"] == "flaky" and d["state"] == "FAILED" and d["exit_code"] == 4
        assert d["parameters"] == {"n": "3"} and d["after"] == ["prep"]
        assert d["stderr"] == "no\n" and "exit code 4" in d["error"]
        assert [a["state"] for a in d["attempts"]] == ["FAILED"] and d["attempts"][0]["worker"]
        view.show("prep")
        assert "<strong>Prepare</strong>" in view.detail["description"]
        assert "<script>" not in view.detail["description"]  # raw HTML shown as text

        view._on_custom(view, {"action": "run_selection"}, [])
        assert "select the tasks" in view.error
        view._on_custom(view, {"action": "retry_failed"}, [])  # the button
        assert not view.error and view.run_id != run.id
        assert view.message == f"started run {view.run_id}"
        wait_until(lambda: settled(view, flaky="SUCCEEDED", last="SUCCEEDED"), what="the retry")
        assert client.status(view.run_id)["run"]["options"]["rerun_of"] == run.id
        # What succeeded was reused, not run again.
        assert next(t for t in client.status(view.run_id)["tasks"]
                    if t["name"] == "prep")["reused_from"]

        again = view.run_id
        view.selected = ["last"]
        view.run_selection()
        wait_until(lambda: settled(view, last="SUCCEEDED") and view.run_state == "SUCCEEDED",
                   what="the selection's run")
        assert client.status(view.run_id)["run"]["options"]["selected"] == ["last"]
        view.run_from("flaky")
        wait_until(lambda: view.run_state == "SUCCEEDED", what="the run from flaky")
        assert view.run_id != again
        done = view.run_id
        view._on_custom(view, {"action": "retry_failed"}, [])
        assert "has no failed tasks to rerun" in view.error and view.run_id == done
        view.close()


def test_dagview_shows_a_map_as_one_box_with_counts_and_opens_its_members(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    gate, fixed = tmp_path / "gate", tmp_path / "fixed"
    n, bad = 300, (7, 150, 299)
    wf = Workflow("mapped", base_dir=tmp_path, parameters={"xs": list(range(n)), "extra": 0})
    sim = wf.shell("sim", "echo simulated")
    # Each member waits for the test's gate: the test sees them run before they end.
    analyse = wf.shell("analyse", f"{gate_sh(gate)}; echo x=$x; test -e {fixed} || case $x "
                       f"in {'|'.join(map(str, bad))}) echo bad $x >&2; exit 3;; esac",
                       map={"x": "${params.xs}"}, after=sim, description="One *x*.")
    wf.shell("sum", "echo sum", after=analyse)
    wf.shell("extra", "echo extra", after=sim, when="${params.extra} > 0")
    m = managers("--workers", "1", "--worker-slots", "4")
    with m.client() as client:
        view = kw.DagView(client.submit(wf))
        wait_until(lambda: view.maps["analyse"]["counts"].get("RUNNING"),
                   what="members running, counted")
        assert view.maps["analyse"]["total"] == n
        assert "analyse \u00d7300" in view.maps["analyse"]["svg"]  # the box, as drawn
        gate.touch()
        wait_until(lambda: view.run_state == "FAILED", what="the run's end")
        wait_until(lambda: view.maps["analyse"]["counts"] == {"SUCCEEDED": n - 3, "FAILED": 3},
                   what="the map's final counts")
        # The members' states stay in Python: the browser gets counts, not 300 states.
        assert set(view.states) == {"sim", "analyse", "sum", "extra"}
        assert view.states["analyse"] == "FAILED" and view.states["sum"] == "SKIPPED"
        assert view.counts == {"SUCCEEDED": 1 + n - 3, "FAILED": 1 + 3, "SKIPPED": 2}
        assert view.conditions == {"extra": "condition false: 0 > 0"}  # no failure
        again = kw.DagView(client.run(view.run_id))  # the ended run, loaded in one go
        assert (again.states, again.counts, again.conditions) == (
            view.states, view.counts, view.conditions)
        assert again.maps["analyse"]["counts"] == view.maps["analyse"]["counts"]
        again.close()
        assert "297 ✓ 3 ✗ 0 ▶" in view.maps["analyse"]["svg"]

        view.opened = "analyse"  # what a click on its box does
        assert [r[1] for r in view.members["rows"]] == [f"analyse[{i}]" for i in range(PAGE)]
        assert view.members["matching"] == n
        state = json.dumps({k: v for k, v in view.get_state().items()
                            if k not in ("_esm", "_css")}, default=str)  # (the code)
        assert "analyse[100]" not in state and len(state) < 30_000  # one page, small
        view.member_offset = 200
        assert view.members["rows"][-1] == [299, "analyse[299]", "FAILED"]
        view.member_filter, view.member_offset = "FAILED", 0
        assert [r[0] for r in view.members["rows"]] == list(bad)

        view.focus = "analyse[150]"  # a click on a member
        d = view.detail
        assert d["member_of"] == "analyse" and d["index"] == 150 and d["state"] == "FAILED"
        assert d["stdout"] == "x=150\n" and d["stderr"] == "bad 150\n"
        assert "exit code 3" in d["error"] and "<em>x</em>" in d["description"]
        view.show("extra")
        assert view.detail["condition"] and view.detail["reason"] == "condition false: 0 > 0"
        svg = view.to_svg()
        assert svg.count('class="kale-node') == 4 and "stroke-dasharray" in svg

        fixed.touch()
        first = view.run_id
        view.retry_failed()  # the failed members run again; the others are reused
        wait_until(lambda: view.run_state == "SUCCEEDED", what="the retry")
        assert view.run_id != first and view.opened == "analyse"  # the list stays open
        wait_until(lambda: view.maps["analyse"]["counts"] == {"SUCCEEDED": n},
                   what="every member succeeded")
        assert view.members["rows"] == []  # (still only the failed ones: none now)
        reused = {t["name"]: t["reused_from"] for t in client.status(view.run_id)["tasks"]}
        assert sum(1 for i in range(n) if reused[f"analyse[{i}]"] == first) == n - 3
        view.run_from("analyse[3]")  # a member: its map and what is below it
        assert "started run" in view.message
        view.opened = "sum"
        assert "'sum' is not a map" in view.error and view.opened == ""
        view.close()


def test_dagview_sends_the_browser_changes_and_now_and_then_everything(
        tmp_path: Path, managers: Callable[..., Manager], monkeypatch: pytest.MonkeyPatch) -> None:
    gate = tmp_path / "gate"
    wf = Workflow("fan", base_dir=tmp_path)
    start = wf.shell("start", "true")
    sims = [wf.shell(f"sim-{i}", f"{gate_sh(gate)}; echo {i}", after=start) for i in range(30)]
    wf.shell("gather", "true", after=sims)
    m = managers("--workers", "1", "--worker-slots", "4")
    sent: list[tuple[str, Any]] = []  # what the browser was sent, in order
    with m.client() as client:
        view = kw.DagView(client.submit(wf))
        view.observe(lambda c: sent.append((c["name"], c["new"])),
                     names=["delta", "base_states", "base_groups"])
        base = (dict(view.base_states), dict(view.base_groups))
        assert set(base[0]) == {"start", "gather"} and set(base[1]) == {"sim-{0..29}"}
        wait_until(lambda: view.maps["sim-{0..29}"]["counts"].get("RUNNING"),
                   what="similar tasks running, counted in their group's box")
        gate.touch()
        wait_until(lambda: view.run_state == "SUCCEEDED", what="the run's end")
        deltas = [d for name, d in sent if name == "delta"]
        assert deltas and not [n for n, _ in sent if n != "delta"]  # no full sync (< 10 s)
        assert [d["seq"] for d in deltas] == sorted({d["seq"] for d in deltas})
        states, groups = dict(base[0]), dict(base[1])
        for d in deltas:  # what the browser does: each change onto what it has
            assert set(d["states"]) <= {"start", "gather"}, "a member sent as a box"
            assert set(d["maps"]) <= {"sim-{0..29}"}
            states.update(d["states"])
            groups.update(d["maps"])
        assert states == view.states == {"start": "SUCCEEDED", "gather": "SUCCEEDED"}
        assert groups == view.maps and groups["sim-{0..29}"]["counts"] == {"SUCCEEDED": 30}
        assert groups["sim-{0..29}"]["state"] == "SUCCEEDED"
        assert max(len(json.dumps(d)) for d in deltas) < 4_000  # a box, not the graph
        assert not {"states", "maps"} & set(view.keys)  # (only what changed is synced)
        view.focus = "sim-{0..29}"  # a click on the group's box
        assert view.detail["similar"] and "30 similar tasks: 30 SUCCEEDED" in \
            view.detail["description"] and view.detail["after"] == ["start"]
        view.focus = "sim-7"  # one of them, in the list
        assert view.detail["group"] == "sim-{0..29}" and view.detail["stdout"] == "7\n"

        sent.clear()
        view._on_custom(view, {"action": "sync"}, [])  # a view that shows asks for all
        assert view.base_states == view.states and view.base_groups == view.maps
        assert {n for n, _ in sent} >= {"base_states", "base_groups"}
        monkeypatch.setattr(dag_module, "FULL_SYNC", 0.0)  # each batch: everything
        sent.clear()
        view.run_from("gather")
        wait_until(lambda: view.run_state == "SUCCEEDED" and view.base_states.get("gather")
                   == "SUCCEEDED", what="the new run's end, sent in full")
        assert not [d for n, d in sent if n == "delta" and (d["states"] or d["maps"])]
        view.close()


def test_the_dashboard_logs_and_charts_a_map_of_many_members(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    start, gate, n = tmp_path / "start", tmp_path / "gate", 300
    wf = Workflow("many", base_dir=tmp_path, parameters={"xs": list(range(n))})
    sim = wf.shell("sim", f"{gate_sh(start)}; echo simulated")
    # Four members at a time wait for the test's gate: sampled while they run together.
    analyse = wf.shell("analyse", f"{gate_sh(gate)}; echo x=$x", map={"x": "${params.xs}"},
                       after=sim)
    wf.shell("sum", "echo sum", after=analyse)
    m = managers("--workers", "1", "--worker-slots", "4", "--sample-interval", "0.5")
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id)["tasks"][0]["state"] == "RUNNING",
                   what="sim running")
        dash = kw.Dashboard(run)  # before the map has members
        assert dash.logs.tasks == ["sim", "analyse", "sum"] and dash.logs.task == "sim"
        start.touch()

        def running() -> list[str]:
            return [t["name"] for t in client.status(run.id)["tasks"]
                    if t.get("member_of") == "analyse" and t["state"] == "RUNNING"]

        def summed() -> bool:  # the map's memory line is its members' total, not one's
            line = dash.resources.series.get("analyse")
            one = max((s["rss"] or 0 for t in running() for s in client.resources(run.id, t)),
                      default=0)
            return bool(line) and len(line["t"]) >= 3 and max(line["rss"]) > one > 0

        wait_until(summed, what="the map's members charted as one line, their sum")
        assert not [name for name in dash.resources.series if "[" in name]  # no line a member
        member = running()[0]
        dash.dag.focus = member  # a click on a member: its own line
        assert dash.resources.task == member and list(dash.resources.series) in ([], [member])
        wait_until(lambda: list(dash.resources.series) == [member], what="the member's line")
        gate.touch()
        assert client.run(run.id).wait(120).state.value == "SUCCEEDED"

        dash.dag.focus = "analyse[250]"  # made after the Log tab loaded
        assert dash.logs.task == "analyse[250]" and dash.logs.text == "x=250\n"
        assert dash.logs.tasks == ["sim", "analyse", "sum", "analyse[250]"]
        assert dash.resources.task == "analyse[250]"
        dash.dag.focus = "sum"  # back to a task of the workflow: the whole run's charts
        assert dash.logs.tasks == ["sim", "analyse", "sum"] and dash.logs.text == "sum\n"
        assert dash.resources.task == "" and "analyse" in dash.resources.series
        dash.logs.task = "analyse[999]"
        assert "analyse[999]" in dash.logs.error and dash.logs.task == "sum"
        assert dash.logs.tasks == ["sim", "analyse", "sum"]
        dash.close()
        # A finished run of 300 members: the choice is the workflow's three tasks.
        view = kw.LogView(run, task="analyse[7]")
        assert view.tasks == ["sim", "analyse", "sum", "analyse[7]"] and view.text == "x=7\n"
        view.task = "analyse"
        assert view.tasks == ["sim", "analyse", "sum"]
        view.close()


def test_cancel_in_the_dagview_cancels_the_selected_task_or_the_run(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    wf = Workflow("long", base_dir=tmp_path)
    wf.shell("a", gate_sh(tmp_path / "never"))  # both run until cancelled
    wf.shell("b", gate_sh(tmp_path / "never"))
    m = managers("--workers", "1", "--worker-slots", "2")
    with m.client() as client:
        view = kw.DagView(client.submit(wf))
        wait_until(lambda: settled(view, a="RUNNING", b="RUNNING"), what="both to run")
        view.selected = ["a"]
        view._on_custom(view, {"action": "cancel"}, [])
        wait_until(lambda: settled(view, a="CANCELLED", b="RUNNING"), what="a cancelled")
        view.selected = []
        view.cancel()
        wait_until(lambda: view.states.get("b") == "CANCELLED" and view.run_state == "CANCELLED",
                   what="the run cancelled")
        view.close()


def test_a_logview_of_100000_tasks_offers_the_first_thousand_and_the_one_shown() -> None:
    from kale.widgets.log import LIST_MAX, offered

    names = [f"sim-{i}" for i in range(100_000)]
    assert offered(names, "sim-5") == names[:LIST_MAX]
    assert offered(names, "sim-99999") == [*names[:LIST_MAX], "sim-99999"]
    assert offered(["a", "b"], "analyse[7]") == ["a", "b", "analyse[7]"]
    assert offered(["a", "b"], "") == ["a", "b"]


def test_logview_follows_a_task_and_switches_streams(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    wf = Workflow("talk", base_dir=tmp_path)
    wf.shell("talk", "for i in 1 2 3 4 5; do echo line $i; echo err $i >&2; sleep 0.3; done")
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: client.status(run.id)["tasks"][0]["state"] == "RUNNING",
                   what="running")
        view = kw.LogView(run)
        assert view.task == "talk" and view.tasks == ["talk"] and view.follow
        wait_until(lambda: view.text == "".join(f"line {i}\n" for i in range(1, 6)),
                   what="every line, once, in order")
        view.stream = "stderr"
        assert view.text == "".join(f"err {i}\n" for i in range(1, 6))
        # Lines a reconnected stream sends again are not shown twice.
        view.on_events([("log", {"task": "talk", "stream": "stderr", "line": "err 5",
                                 "offset": 30})])
        assert view.text.count("err 5") == 1
        view.close()


def test_resourceview_charts_each_task_and_each_worker(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    gate = tmp_path / "gate"
    wf = Workflow("burn", base_dir=tmp_path)
    # Both run until the test has seen them charted: the busy one busy, however much of a
    # core a loaded machine gives it in a given time.
    wf.shell("burn", ["python", "-c", busy_py(gate)])
    wf.shell("idle", gate_sh(gate))
    m = managers("--workers", "1", "--worker-slots", "2", "--sample-interval", "0.5")
    with m.client() as client:
        view = kw.ResourceView(client.submit(wf))
        wait_until(lambda: {"burn", "idle"} <= set(view.series)
                   and len(view.series["burn"]["t"]) >= 2
                   and max(view.series["burn"]["cpu"]) > 50, what="samples of both tasks")
        gate.touch()
        assert client.run(view.run_id).wait(120).state.value == "SUCCEEDED"
        wait_until(lambda: len(view.series["burn"]["t"])
                   == len(client.resources(view.run_id, "burn")), what="every sample")
        assert max(view.series["burn"]["cpu"]) > 50 > max(view.series["idle"]["cpu"])
        assert min(view.series["burn"]["rss"]) > 1_000_000
        view.task = "idle"
        assert list(view.series) == ["idle"]
        view.by = "worker"
        (worker,) = view.series  # one worker ran both
        assert worker in {w["id"] for w in client.workers()}
        assert max(view.series[worker]["cpu"]) > 50
        view.close()


def test_runsview_lists_runs_and_opens_one(tmp_path: Path,
                                          managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(demo(tmp_path)).wait(120)
        view = kw.RunsView(client, interval=0)
        assert [(r["id"], r["state"]) for r in view.runs] == [(run.id, "FAILED")]
        opened: list[str] = []
        view.on_open.append(opened.append)
        view._on_custom(view, {"action": "open", "id": run.id}, [])
        assert opened == [run.id] and view.opened == run.id
        view.close()
        # A finished run shows as it ended, from the first frame: its history is not
        # replayed over it (boxes going back to RUNNING and forth again).
        dag = kw.DagView(run)
        final = dict(dag.states)
        seen: list[Any] = []
        dag.observe(lambda c: seen.append(c["new"]), names=["states", "run_state"])
        assert dag._feed is not None and dag._feed.wait(60)
        assert final == {"prep": "SUCCEEDED", "flaky": "FAILED", "last": "SKIPPED"}
        assert all(s in (final, "FAILED") for s in seen), seen
        dag.close()


def test_workersview_starts_and_stops_local_workers(managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        view = kw.WorkersView(client, interval=0)
        assert view.workers == []  # none until there is work
        view._on_custom(view, {"action": "start",
                               "form": {"kind": "local", "count": "2", "slots": "1"}}, [])
        assert not view.error and view.message == "started 2 local worker(s)"
        wait_until(lambda: (view.refresh(), len(view.workers) == 2)[1], what="two workers")
        assert {w["slots"] for w in view.workers} == {1}
        victim = view.workers[0]
        view._on_custom(view, {"action": "stop", "id": victim["id"]}, [])
        wait_until(lambda: (view.refresh(), [w["id"] for w in view.workers]
                            == [view.workers[-1]["id"]] and len(view.workers) == 1)[1],
                   what="one worker left")
        wait_until(lambda: not process_alive(victim["pid"]),
                   what="the stopped worker's process to end")
        view._on_custom(view, {"action": "start", "form": {"kind": "local", "count": "x"}}, [])
        assert "whole numbers" in view.error
        view._on_custom(view, {"action": "stop", "id": "nobody"}, [])
        assert "no worker 'nobody'" in view.error
        view.close()


def test_queueview_and_pilots_from_the_workersview_on_slurm(
        slurm: str, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0")
    with m.client() as client:
        queue = kw.QueueView(client, interval=0)
        assert queue.scheduler == "slurm" and not queue.error
        assert {p["name"] for p in queue.partitions} >= {"debug", "short"}
        workers = kw.WorkersView(client, interval=0)
        workers.start("slurm", 1, walltime="00:05:00", nodes=1, queue="debug")
        (job,) = workers.jobs
        assert job["mode"] == "pilot" and job["scheduler"] == "slurm"
        queue.refresh()
        mine = [j for j in queue.jobs if (j.get("kale") or {}).get("id") == job["id"]]
        assert mine and mine[0]["partition"] == "debug"
        wait_until(lambda: (workers.refresh(), any(w["job"] == job["id"]
                                                   for w in workers.workers))[1],
                   what="the pilot's worker to connect")
        workers._on_custom(workers, {"action": "cancel_job", "id": job["id"]}, [])
        assert not workers.error
        wait_until(lambda: (workers.refresh(), not workers.jobs and not workers.workers)[1],
                   what="the pilot gone")
        workers._on_custom(workers, {"action": "start", "form": {
            "kind": "slurm", "count": "1", "walltime": "99:00:00", "queue": "short"}}, [])
        assert "slurm refused the job" in workers.error  # in the scheduler's words
        assert "time limit" in workers.error
        queue.close()
        workers.close()


def test_queueview_without_a_scheduler_says_so(managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0")
    with m.client() as client:
        view = kw.QueueView(client, interval=0, scheduler="pbs")  # no qstat here
        assert view.scheduler == "pbs" and view.jobs == [] and view.partitions == []
        assert view.problems and all("qstat" in p for p in view.problems), view.problems
        view.close()


def test_login_with_a_token_or_a_token_file(managers: Callable[..., Manager],
                                            home: Path) -> None:
    m = managers("--workers", "0")
    login = kw.Login()
    connected: list[Any] = []
    login.on_connect.append(connected.append)
    login._on_custom(login, {"action": "connect", "form": {
        "method": "token", "url": m.url, "token": "not-the-token"}}, [])
    assert "401" in login.error and login.client is None and not login.connected
    login._on_custom(login, {"action": "connect", "form": {
        "method": "token", "url": m.url, "token_file": str(home / "token")}}, [])
    assert not login.error and login.connected == f"manager at {m.url}"
    assert connected == [login.client] and login.client.runs() == []
    assert "token" not in login.trait_names() and "not-the-token" not in str(login.get_state())
    login.close()


def test_login_through_ssh_reads_the_remote_home_and_tunnels(
        ssh_host: str, managers: Callable[..., Manager], home: Path, tmp_path: Path) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(demo(tmp_path)).wait(120)
    login = kw.Login()
    login._on_custom(login, {"action": "connect", "form": {
        "method": "ssh", "host": ssh_host, "remote_home": str(home)}}, [])
    assert not login.error, login.error
    assert login.connected == f"manager on {ssh_host} (through SSH)"
    assert login.client.url != m.url  # the tunnel's local end
    assert [r["id"] for r in login.client.runs()] == [run.id]
    login.close()


def test_login_over_ssh_to_a_home_without_a_manager_says_so(ssh_host: str,
                                                           tmp_path: Path) -> None:
    login = kw.Login()
    login._on_custom(login, {"action": "connect", "form": {
        "method": "ssh", "host": ssh_host, "remote_home": str(tmp_path / "none")}}, [])
    assert "no manager runs there" in login.error
    login._on_custom(login, {"action": "connect", "form": {"method": "ssh", "host": ""}}, [])
    assert "SSH host" in login.error
    login.close()


def test_the_dashboard_shares_one_feed_and_follows_a_retry(
        tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(demo(tmp_path))
        dash = run.dashboard() if hasattr(run, "dashboard") else kw.Dashboard(run)
        assert dash.dag._feed is dash.logs._feed is dash.resources._feed
        wait_until(lambda: settled(dash.dag, flaky="FAILED", last="SKIPPED"), what="the failure")
        dash.dag.focus = "flaky"
        assert dash.logs.task == "flaky"
        titles = [dash.tabs.get_title(i) for i in range(len(dash.tabs.children))]
        assert titles[:2] == ["Log", "Resources"] and titles[-3:] == ["Workers", "Runs", "Connect"]
        dash.dag.retry_failed()
        new = dash.dag.run_id
        assert new != run.id and dash.logs.run_id == new == dash.resources.run_id == dash.run_id
        wait_until(lambda: settled(dash.dag, flaky="SUCCEEDED", last="SUCCEEDED"), what="retry")
        assert dash.runs.opened == new
        dash.runs.open_run(run.id)  # back to the first run
        assert dash.dag.run_id == run.id and dash.dag.states["flaky"] == "FAILED"
        dash.close()


def test_a_dashboard_of_a_run_without_a_manager(tmp_path: Path, home: Path) -> None:
    run = demo(tmp_path).run()
    dash = run.dashboard()
    wait_until(lambda: settled(dash.dag, prep="SUCCEEDED", flaky="FAILED", last="SKIPPED"),
               what="states from the store")
    assert "Workers" in [dash.tabs.get_title(i) for i in range(len(dash.tabs.children))]
    dash.dag.retry_failed()
    wait_until(lambda: settled(dash.dag, flaky="SUCCEEDED", last="SUCCEEDED"), what="the retry")
    dash.dag.selected = ["last"]
    dash.dag._on_custom(dash.dag, {"action": "cancel"}, [])
    assert "needs the manager" in dash.dag.error
    dash.close()


def test_the_feed_reconnects_after_the_manager_is_killed(
        tmp_path: Path, kale: Kale, managers: Callable[..., Manager]) -> None:
    gate = tmp_path / "gate"
    wf = Workflow("steady", base_dir=tmp_path)
    prev = None
    for i in range(6):  # s1 runs until the test opens the gate: it is running at the kill
        prev = wf.shell(f"s{i}", gate_sh(gate) if i == 1 else "true",
                        after=[prev] if prev else [])
    m = managers("--workers", "1")
    client = m.client()
    view = kw.DagView(client.submit(wf))
    wait_until(lambda: view.states.get("s1") == "RUNNING", what="s1 running")
    pid = int(m.doc["pid"])
    os.kill(pid, signal.SIGKILL)  # the stream breaks mid-run
    wait_until(lambda: not process_alive(pid), what="the killed manager to be gone")
    m.start()  # a new manager resumes the run, the feed reconnects to it
    gate.touch()
    wait_until(lambda: view.run_state == "SUCCEEDED", what="the run's end, seen through the feed")
    assert set(view.states.values()) == {"SUCCEEDED"}
    assert client.status(view.run_id)["run"]["state"] == "SUCCEEDED"  # the manager agrees
    view.close()
    client.close()
