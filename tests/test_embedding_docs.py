"""Every ```python block of docs/embedding.md is a complete program: run each exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "embedding.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)

#: What each program prints when it works (each also asserts what it shows).
EXPECTED = [
    ["delivered to 1 of 1 devices", "alice alice-phone {'title': 'Order shipped'"],
    ["{'ok': True, 'output': 'Hello, world'}"],
    ["noop: ok=True"],
]


def test_the_guide_has_the_three_programs() -> None:
    assert len(BLOCKS) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_program_runs_as_written(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"program_{index + 1}.py"
    script.write_text(BLOCKS[index])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
    env["TMPDIR"] = str(tmp_path)  # the programs keep their state in temporary folders: keep them here
    proc = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in EXPECTED[index]:
        assert fragment in proc.stdout, proc.stdout
