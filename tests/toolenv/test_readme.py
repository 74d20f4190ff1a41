"""The README's snippets do what the README says they do."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)  # type: ignore[union-attr]


def test_quickstart_snippet_solves_its_task_as_printed() -> None:
    code = _python_block_after("## Using an environment")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    question, tool_output, result = out.getvalue().splitlines()
    assert question.startswith("Lucia rides a bike at 8 km per hour for 3 hours")
    assert tool_output == "109.3"
    assert result == "1.0 1.0 True"
    # the comments in the snippet say the same
    assert '"109.3": the tool\'s output' in code and "# 1.0 1.0 True" in code


def test_every_protocol_is_documented() -> None:
    from toolenv.protocols import PROTOCOLS

    text = README.read_text(encoding="utf-8")
    for name in PROTOCOLS:
        assert f"| `{name}`" in text
