"""The studies' end-to-end tests run an entry's --quick size in-process, into tmp_path."""
import json

import pytest


@pytest.fixture
def quick_entry(tmp_path, capsys):
    """Run one entry of a registry at its --quick size with the given seeds; returns (verdict dict, printed line)."""
    from cotresnet.studies.cli import run_entries

    def run(registry, name, seeds=None):
        (verdict,) = run_entries(registry, [name], tmp_path, quick=True, seeds=seeds)
        assert verdict is not None, capsys.readouterr().err
        where = tmp_path / name
        assert (where / "figure.png").stat().st_size > 0 and (where / "table.csv").stat().st_size > 0
        saved = json.loads((where / "verdict.json").read_text())
        line = capsys.readouterr().out.strip()
        assert line == saved["line"] and line.startswith(f"{name}: ") and line.endswith(" s)")
        assert saved["verdict"] in ("PASS", "FAIL") and saved["runtime_s"] < 90
        return saved, line

    return run
