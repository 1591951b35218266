"""bench/tools/frontier_table.py: the FLOPs ratio of a point is the one its plan measured."""
import json

from helpers import bench_tool


def _tool():
    return bench_tool("frontier_table")


def _run(tmp_path, name: str, plan_kept_flops, recorded=None):
    run = tmp_path / name
    (run / "plans").mkdir(parents=True)
    if plan_kept_flops is not None:  # the plan as score_to_budgets writes it (config.measured)
        (run / "plans" / "f.json").write_text(json.dumps(
            {"config": {"measured": {"kept_flops": plan_kept_flops}}}))
    point = {"name": "taylor_fisher-distill-speedup2", "criterion": "taylor_fisher", "budget": "speedup=2",
             "params": 0.58, "speedup": 2.1, "mse": 0.30, "pareto": True, "flops": recorded}
    (run / "frontier.json").write_text(json.dumps({
        "data": {"path": f"/x/{name}.csv.gz"}, "dense": {"finetuned": {"mse": 0.30}},
        "points": [point], "timings": {"total": 10.0},
        "calibration": {"taylor_fisher": {"speedup=2": {"candidate": "flops=0.4", "plan": "plans/f.json"}}}}))
    return run


def test_flops_ratio_is_the_plans_measured_one_and_falls_back_to_the_budget(tmp_path, capsys):
    tool = _tool()
    measured = _run(tmp_path, "A", 0.32)   # kept less than the 0.4 budget (e.g. --align)
    gone = _run(tmp_path, "B", None)       # no plan file: 1 / the candidate budget
    recorded = _run(tmp_path, "C", 0.32, recorded=0.3)  # frontier.json's own kept FLOPs come first
    assert tool.main([str(measured), str(gone), str(recorded)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if "taylor_fisher-distill-speedup2" in r]
    a = [c.strip() for c in rows[0].split("|")]
    b = [c.strip() for c in rows[1].split("|")]
    assert a[1] == "A" and a[5] == "3.12x" and a[6] == "0.67"    # 1/0.32; 2.1 / 3.125
    assert b[1] == "B" and b[5] == "2.50x" and b[6] == "0.84"    # 1/0.4; 2.1 / 2.5
    c = [c.strip() for c in rows[2].split("|")]
    assert c[1] == "C" and c[5] == "3.33x" and c[6] == "0.63"
