"""Keep the README's configuration tables in step with the settings themselves: the
server's settings (`server/settings.py`) and the settings each provider declares
(`PROVIDER = ProviderSpec(...)` in its file, collected by `pipelines/registry.py`).

.venv/bin/python -m scripts.config_table          # print the tables
.venv/bin/python -m scripts.config_table --write  # rewrite them in README.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pipelines.registry import REGISTRY
from server.settings import declared_settings, server_env_docs

README = Path(__file__).resolve().parent.parent / "README.md"
#: Each table's markers in the README.
SERVER = ("<!-- config:start -->", "<!-- config:end -->")
PROVIDERS = ("<!-- provider-config:start -->", "<!-- provider-config:end -->")


def _shown(default: str) -> str:
    return f"`{default}`" if default else "(unset)"


def server_table() -> str:
    lines = ["| Variable | Default | What it does |", "|---|---|---|"]
    for name, default, doc in server_env_docs():
        lines.append(f"| `{name}` | {_shown(default)} | {doc} |")
    return "\n".join(lines)


def provider_table() -> str:
    lines = ["| Variable | Default | Read by | What it does |", "|---|---|---|---|"]
    for name, setting in declared_settings().items():
        users = ", ".join(REGISTRY.users(name))
        doc = setting.doc + (" Secret." if setting.secret else "")
        lines.append(f"| `{name}` | {_shown(setting.default)} | {users} | {doc} |")
    return "\n".join(lines)


def _replace(text: str, markers: tuple[str, str], table: str) -> str:
    start, end = markers
    if start not in text or end not in text:
        raise SystemExit(f"README.md lacks {start} ... {end}")
    pattern = re.escape(start) + ".*?" + re.escape(end)
    return re.sub(pattern, lambda _: f"{start}\n{table}\n{end}", text, flags=re.DOTALL)


def main() -> None:
    if "--write" not in sys.argv:
        print(server_table(), provider_table(), sep="\n\n")
        return
    text = _replace(README.read_text(), SERVER, server_table())
    README.write_text(_replace(text, PROVIDERS, provider_table()))


if __name__ == "__main__":
    main()
