"""Keep the README's configuration table in step with the settings themselves.

.venv/bin/python scripts/config_table.py          # print the table
.venv/bin/python scripts/config_table.py --write  # rewrite it in README.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from server.settings import env_docs

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def table() -> str:
    lines = ["| Variable | Default | What it does |", "|---|---|---|"]
    for name, default, doc in env_docs():
        shown = f"`{default}`" if default else "(unset)"
        lines.append(f"| `{name}` | {shown} | {doc} |")
    return "\n".join(lines)


def main() -> None:
    if "--write" not in sys.argv:
        print(table())
        return
    text = README.read_text()
    new = re.sub(
        re.escape(START) + ".*?" + re.escape(END),
        lambda _: f"{START}\n{table()}\n{END}",
        text,
        flags=re.DOTALL,
    )
    README.write_text(new)


if __name__ == "__main__":
    main()
