"""The README's Python examples run as written: in order, as one script, and the script exits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Seconds the whole script may take: the examples start a sandbox and wait for one webhook.
SCRIPT_TIMEOUT = 120

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def readme_python_blocks() -> list[str]:
    """Every ```python block of the README, in the order they appear."""
    return _PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples() -> None:
    blocks = readme_python_blocks()
    assert len(blocks) >= 3, blocks
    assert "start_sandbox" in blocks[0]


def test_the_readme_python_examples_run_in_order_as_one_script_and_exit(tmp_path: Path) -> None:
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(readme_python_blocks()), encoding="utf-8")
    env = {
        **os.environ,
        "TILEDESK_TUTORIAL_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(ROOT),
    }
    for name in ("TILEDESK_API_URL", "TILEDESK_SANDBOX_URL", "TILEDESK_WEBHOOK_URL"):
        env.pop(name, None)
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            env=env,
            cwd=tmp_path,  # no .env of the repository is read
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the README's examples did not exit within {SCRIPT_TIMEOUT} s:\n"
            f"{exc.stdout!r}\n{exc.stderr!r}"
        ) from None
    assert result.returncode == 0, result.stdout + result.stderr
    # The webhook example prints the awaited event: role, sender, conversation.
    assert re.search(
        r"^visitor John support-group-[0-9a-f]{24}-[0-9a-f]{32}$", result.stdout, re.M
    ), result.stdout + result.stderr
