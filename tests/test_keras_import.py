"""frlr.keras is optional: ``import frlr`` never imports Keras, and without Keras the error
says which extra to install. Run in a fresh interpreter, where no test has imported Keras."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import frlr

SCRIPT = """
import sys
import frlr
frameworks = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "jax"))
assert not frameworks, frameworks
sys.modules["keras"] = None  # what Python sees when Keras is not installed
try:
    import frlr.keras
except ImportError as error:
    print(error)
else:
    raise SystemExit("frlr.keras imported without Keras")
"""


def test_frlr_alone_imports_no_keras_and_the_guard_names_the_extra():
    src = str(Path(frlr.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH")))),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "frlr[keras]"' in proc.stdout, proc.stdout
    assert "frlr[tensorflow]" in proc.stdout and "frlr[jax]" in proc.stdout, proc.stdout
