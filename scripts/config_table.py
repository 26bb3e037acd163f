"""Print the README's configuration table from the settings themselves.

    .venv/bin/python scripts/config_table.py > /tmp/table.md
"""

from server.settings import env_docs


def main() -> None:
    print("| Variable | Default | What it does |")
    print("|---|---|---|")
    for name, default, doc in env_docs():
        shown = f"`{default}`" if default else "(unset)"
        print(f"| `{name}` | {shown} | {doc} |")


if __name__ == "__main__":
    main()
