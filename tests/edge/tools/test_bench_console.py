"""What the bench engineer reads while a scenario runs: the console, and a quiet LiteRT."""

from __future__ import annotations

import io
import subprocess
import sys
import time

from edge.tools.bench import Console

LOAD_POSTURE_MODEL = (
    "from edge.inference.runtime import PostureModel\n"
    "from edge.inference.card import packaged_model\n"
    "PostureModel.load(*packaged_model('posture'))\n"
    "print('loaded', flush=True)\n"
)


def test_loading_a_model_prints_no_xnnpack_info_line() -> None:
    """LiteRT's C++ runtime prints 'INFO: Created TensorFlow Lite XNNPACK delegate for
    CPU.' on stderr when the first interpreter is made; nobody at the bench needs it."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_POSTURE_MODEL], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loaded\n"
    assert "XNNPACK" not in result.stderr
    assert result.stderr == ""


def test_what_else_is_written_on_stderr_meanwhile_still_shows() -> None:
    """Only that one line is dropped: an error the runtime (or anyone) writes on file
    descriptor 2 while the interpreter is made reaches stderr."""
    script = (
        "import os\n"
        "from edge.inference import runtime as inference\n"
        "with inference._without_xnnpack_info():\n"
        "    os.write(2, b'ERROR: the delegate could not be applied\\n')\n"
        "    os.write(2, inference.XNNPACK_INFO + b'\\n')\n"
        "    os.write(2, b'WARNING: something else\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "ERROR: the delegate could not be applied\nWARNING: something else\n"
    )


def test_lines_carry_the_scenario_clock_once_it_runs() -> None:
    out = io.StringIO()
    console = Console(out, status=False)
    console.line("starting the site")
    console.begin(time.monotonic() - 12.04, 15)
    console.line("rolling cot 2 face-down")
    console.line("event prone_alarm", 7.58)
    console.end()
    assert out.getvalue().splitlines() == [
        "starting the site",
        "t=  12.0 s  rolling cot 2 face-down",
        "t=   7.6 s  event prone_alarm",
    ]


def test_on_a_terminal_a_status_line_shows_the_clock_between_lines() -> None:
    out = io.StringIO()
    console = Console(out, status=True)
    console.begin(time.monotonic() - 3.0, 15)
    console.tick()
    assert out.getvalue().startswith("[t=  3.0 of 15 s]")
    console.line("siren on", 3.0)
    console.end()
    text = out.getvalue()
    # The status line is erased before each line and after the run: no clutter left.
    assert "\r\x1b[Kt=   3.0 s  siren on\n" in text
    assert text.endswith("\r\x1b[K")
