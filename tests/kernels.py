"""Helpers for tests that start real kernels: an environment isolated under one folder."""

from __future__ import annotations

import os
from pathlib import Path

_DIRS = (("XDG_DATA_HOME", "xdg"), ("XDG_CONFIG_HOME", "xdg-config"), ("SMTP_MAGIC_OUTBOX", "outbox"),
         ("SMTP_MAGIC_CAPTURE_DIR", "capture"), ("JUPYTER_CONFIG_DIR", "jconfig"),
         ("JUPYTER_DATA_DIR", "jdata"), ("JUPYTER_RUNTIME_DIR", "jruntime"),
         ("IPYTHONDIR", "ipython"))


def kernel_environment(root: Path) -> dict[str, str]:
    """This process's environment with every data and Jupyter directory under ``root``, and no
    SMTP_* settings of the developer's (the python3 kernelspec is found in the venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "JUPYTER_"))}
    env.update({name: str(root / sub) for name, sub in _DIRS})
    return env
