"""The README's first command runs examples/quickstart.py: keep it working."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs(capsys) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "refused   nothing" in out
    assert "values equal to h5py" in out
    assert "+ ocean/sst_mean" in out
