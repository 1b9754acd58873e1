"""The installed ``ciba-middleware`` command, run in a subprocess as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "ciba-middleware"


def cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command with this process's environment minus its CIBA_* variables, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CIBA_")}
    return subprocess.run(
        [str(SCRIPT), *args], env={**full, **env}, capture_output=True, text=True, timeout=60, check=False
    )
