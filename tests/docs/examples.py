"""The fenced code blocks of README.md and docs/*.md: found, classified, and run in order.

A block is what sits between two ``` (or ~~~) fences. Its kind comes from its language tag
(bash, sh, shell, console: shell; python, py: Python; any other tag: data), or, untagged,
from its content (a line that starts with a command is shell, an import, assignment or
call is Python, anything else, such as a directory tree, is data). An HTML comment on the
line above the fence, ``<!-- example: not run (REASON) -->``, keeps a shell or Python block
from being run and says why.

Run as ``python -m tests.docs.examples BLOCKS.json`` (in the working directory the blocks
expect), it runs the listed blocks in order: shell blocks with ``bash -e``, Python blocks
with ``exec`` in one namespace shared by the file's Python blocks, as a reader who runs a
page top to bottom keeps the names an earlier block defined. It stops at the first failure,
naming the block.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

SHELL_TAGS = {"bash", "sh", "shell", "console", "zsh"}
PYTHON_TAGS = {"python", "py", "python3"}
FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
NOT_RUN = re.compile(r"<!--\s*example:\s*not run\s*\((.+)\)\s*-->")
# An untagged line that starts a command, or a Python statement (import, `name = `, a call).
COMMAND = re.compile(
    r"^(anglecurate|make|pip|python3?|torchrun|for|done|cd|export|source|\.|#SBATCH|\S*bin/\S+|[A-Z_]+=\S+)(\s|$)"
)
PYTHON = re.compile(r"^(import \w|from [\w.]+ import |[A-Za-z_][\w.]*(\[[^\]]*\])?\s+=\s|[A-Za-z_][\w.]*\()")


@dataclass(frozen=True)
class Block:
    """One fenced block: ``doc`` (relative to the repository), ``line`` (1-based, of the
    opening fence), its language tag, its text, and the not-run reason above it, if any."""

    doc: str
    line: int
    lang: str
    text: str
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str:
        """``shell``, ``python`` or ``data``."""
        if self.lang in SHELL_TAGS:
            return "shell"
        if self.lang in PYTHON_TAGS:
            return "python"
        if self.lang:
            return "data"
        lines = [line.strip() for line in self.text.splitlines()]
        code = [
            line for line in lines if line and not (line.startswith("#") and not line.startswith("#SBATCH"))
        ]
        if any(PYTHON.match(line) for line in code):
            return "python"
        if any(COMMAND.match(line) for line in code):
            return "shell"
        return "data"


def extract(root: Path, doc: str) -> list[Block]:
    """The fenced blocks of ``root / doc``, in page order."""
    lines = (root / doc).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.groups()
        end = i + 1
        while end < len(lines) and not lines[end].lstrip().startswith(fence):
            end += 1
        above = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = NOT_RUN.search(above)
        blocks.append(
            Block(doc, i + 1, lang.lower(), "\n".join(lines[i + 1 : end]) + "\n", marker and marker.group(1))
        )
        i = end + 1
    return blocks


def docs(root: Path) -> list[str]:
    """README.md and every page under docs/, relative to ``root``."""
    return ["README.md", *sorted(str(p.relative_to(root)) for p in (root / "docs").glob("*.md"))]


def run_blocks(blocks: list[dict], root: Path) -> int:
    """Run ``blocks`` (``Block`` fields) in order in the current directory; 0 when all ran."""
    namespace: dict = {"__name__": "__main__"}
    for block in blocks:
        start = time.perf_counter()
        print(f"--- {block['doc']}:{block['line']} ({block['kind']})", flush=True)
        if block["kind"] == "shell":
            if subprocess.run(["bash", "-e", "-c", block["text"]]).returncode != 0:
                print(f"FAILED: the shell block at {block['doc']}:{block['line']}", flush=True)
                return 1
            print(f"--- ran in {time.perf_counter() - start:.1f} s", flush=True)
            continue
        # Blank lines first, so that a traceback's line numbers are the page's.
        code = compile("\n" * block["line"] + block["text"], str(root / block["doc"]), "exec")
        try:
            exec(code, namespace)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED: the Python block at {block['doc']}:{block['line']}", flush=True)
            return 1
        print(f"--- ran in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def to_json(blocks: list[Block]) -> str:
    return json.dumps([{**asdict(b), "kind": b.kind} for b in blocks])


if __name__ == "__main__":
    sys.exit(run_blocks(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])))
