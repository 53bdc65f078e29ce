"""The code blocks of docs/guide.md run, in order, in a scratch directory."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)


def test_guide_code_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    shutil.copy(ROOT / "examples" / "data" / "ocean_temperature.nc", tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    blocks = _blocks()
    assert len(blocks) >= 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"{GUIDE.name}[block {i}]", "exec"), namespace)  # noqa: S102
            except Exception as exc:  # pragma: no cover - the message says which block failed
                raise AssertionError(f"docs/guide.md block {i} failed: {type(exc).__name__}: {exc}\n{code}") from exc
    out = capsys.readouterr().out
    assert "(31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)" in out
    assert os.path.isdir(tmp_path / "repo")
