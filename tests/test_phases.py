"""The phase runner: order, persistence and resume, selection, the worker role."""
from __future__ import annotations

import json

import pytest

from tsprune.errors import UserError
from tsprune.phases import Phase, PhaseStore, run_phases


class Ctx:
    def __init__(self, fail_at=None):
        self.results, self.calls, self.restored, self.fail_at = {}, [], [], fail_at
        self.loaded = False


def _phases(flag=True):
    def make(name, value):
        def run(c):
            c.calls.append(name)
            if c.fail_at == name:
                raise KeyboardInterrupt
            return value
        return run

    def load(c):
        c.calls.append("load")
        c.loaded = True

    return (
        Phase("load", load, persist=False),
        Phase("a", make("a", {"x": 1}), output=True),
        Phase("b", make("b", 2), restore=lambda c, r: c.restored.append(("b", r))),
        Phase("c", make("c", 3), needs=("b",)),
        Phase("d", make("d", 4), when=lambda c: flag),
        Phase("e", make("e", None), needs=("c",), persist=False, output=True),
    )


def test_runs_in_order_and_persists_results(tmp_path):
    store = PhaseStore(tmp_path / "s.json", {"k": 1})
    c = Ctx()
    done = run_phases(_phases(), c, store, say=lambda m: None)
    assert c.calls == ["load", "a", "b", "c", "d", "e"]
    assert done.results == {"load": None, "a": {"x": 1}, "b": 2, "c": 3, "d": 4, "e": None}
    state = json.loads((tmp_path / "s.json").read_text())
    assert state["done"] == {"a": {"x": 1}, "b": 2, "c": 3, "d": 4}      # not load / e
    assert set(state["timings"]) == {"a", "b", "c", "d"} and set(done.timings) == set(done.results)


def test_resume_skips_finished_phases_and_restores_them(tmp_path):
    store = PhaseStore(tmp_path / "s.json", {"k": 1})
    with pytest.raises(KeyboardInterrupt):
        run_phases(_phases(), Ctx(fail_at="c"), store, say=lambda m: None)
    c = Ctx()
    run_phases(_phases(), c, PhaseStore(tmp_path / "s.json", {"k": 1}), say=lambda m: None)
    assert c.calls == ["load", "c", "d", "e"]          # a and b were kept
    assert c.restored == [("b", 2)] and c.results["a"] == {"x": 1}


def test_other_settings_start_over_or_refuse(tmp_path):
    run_phases(_phases(), Ctx(), PhaseStore(tmp_path / "s.json", {"k": 1}), say=lambda m: None)
    c = Ctx()
    run_phases(_phases(), c, PhaseStore(tmp_path / "s.json", {"k": 2}), say=lambda m: None)
    assert c.calls == ["load", "a", "b", "c", "d", "e"]
    with pytest.raises(UserError, match="--resume"):
        PhaseStore(tmp_path / "s.json", {"k": 3}, on_mismatch="error")


def test_only_leaves_out_phases_and_their_dependents(tmp_path):
    store = PhaseStore(tmp_path / "s.json", {})
    c = Ctx()
    done = run_phases(_phases(), c, store, only={"a", "c", "d"}, say=lambda m: None)
    assert c.calls == ["load", "a", "d"]               # c needs b, which was left out; e needs c
    assert done.left_out == ["b", "c", "e"]
    c2 = Ctx()
    run_phases(_phases(), c2, PhaseStore(tmp_path / "s.json", {}), only={"b", "c"}, say=lambda m: None)
    assert c2.calls == ["load", "b", "c", "e"]         # a and d are done (another run)
    assert json.loads((tmp_path / "s.json").read_text())["done"].keys() == {"a", "b", "c", "d"}


def test_when_switches_a_phase_off():
    c = Ctx()
    run_phases(_phases(flag=False), c, PhaseStore.in_memory(), say=lambda m: None)
    assert "d" not in c.calls


def test_worker_skips_output_and_persists_nothing(tmp_path):
    store = PhaseStore(tmp_path / "s.json", {})
    c = Ctx()
    run_phases(_phases(), c, store, worker=True, say=lambda m: None)
    assert c.calls == ["load", "b", "c", "d"]
    assert not (tmp_path / "s.json").exists()


def test_a_phase_needing_an_absent_phase_is_a_declaration_error():
    bad = (Phase("x", lambda c: 1, needs=("nope",)),)
    with pytest.raises(ValueError, match="nope"):
        run_phases(bad, Ctx(), PhaseStore.in_memory(), say=lambda m: None)


def test_remove_deletes_the_state_and_its_lock(tmp_path):
    store = PhaseStore(tmp_path / "s.json", {})
    store.put("a", 1, 0.1)
    assert (tmp_path / "s.json").exists() and (tmp_path / "s.lock").exists()
    store.remove()
    assert not list(tmp_path.iterdir())
