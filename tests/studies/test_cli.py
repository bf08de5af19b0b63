"""The two commands: one NAME or --all, one line per entry, an entry that raises does not stop the others."""
import pandas as pd
import pytest

from cotresnet.studies import cli
from cotresnet.studies.common import Verdict
from cotresnet.studies.figures import panels


def fake(name, passed=True):
    def run(where, quick, seeds):
        v = Verdict(name, "source", "claim", "x", 1.0, 0.5, 1.5, "1", passed, seeds=seeds or 3, sizes={"quick": quick})
        return v, pd.DataFrame({"a": [1]}), panels(1)[0]
    return run


def broken(where, quick, seeds):
    raise RuntimeError("boom")


def test_all_runs_every_entry_prints_one_line_each_and_reports_a_raising_one(tmp_path, capsys, monkeypatch):
    registry = {"one": fake("one"), "two": broken, "three": fake("three", passed=False)}
    code = cli._main(registry, "prog", ["--all", "--quick", "--out", str(tmp_path), "--seeds", "4"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 1 and len(out) == 3
    assert out[0].startswith("one: x = 1 [0.5, 1.5] (95%) vs claimed 1: PASS (")
    assert out[1] == "two: ERROR RuntimeError: boom"
    assert out[2].startswith("three: ") and ": FAIL (" in out[2]
    assert (tmp_path / "three" / "verdict.json").is_file() and not (tmp_path / "two").exists()


@pytest.mark.parametrize("argv", [[], ["one", "--all"], ["nope"], ["one", "--seeds", "1"]])
def test_bad_arguments_are_refused(argv, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli._main({"one": fake("one")}, "prog", [*argv, "--out", str(tmp_path)])
    assert e.value.code == 2


def test_every_entry_names_a_run_function_and_the_module_form_dispatches(capsys):
    assert set(cli.REPRODUCE).isdisjoint(cli.STUDIES)
    assert cli.main(["nothing"]) == 2
    assert "usage" in capsys.readouterr().err
