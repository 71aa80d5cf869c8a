"""Write the options table of docs/reference/options.md from the settings schema.

The table is ``elir_cli.pipeline.settings.options_table()``: one row per field
of ``RestoreSettings``, the single declaration of the restoration options.
It goes between the ``<!-- options-table -->`` and ``<!-- /options-table -->``
lines. ``--check`` exits 1 when the committed page is out of date
(``tests/test_settings_schema.py`` checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "options.md"
START, END = "<!-- options-table -->", "<!-- /options-table -->"


def render(page: str) -> str:
    from elir_cli.pipeline.settings import options_table

    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n\n{options_table()}\n{END}{tail if tail.strip() else chr(10)}"


def main() -> int:
    page = PAGE.read_text()
    fresh = render(page)
    if "--check" in sys.argv[1:]:
        if fresh != page:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python tools/gen_options_table.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
