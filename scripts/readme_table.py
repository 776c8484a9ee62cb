"""Put a `slimvl bench --md-out` report into README.md between the bench markers (never typed by hand).

python scripts/readme_table.py benchmarks/results/bench_2b_int8_vs_hf.md
"""

import sys
from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def main(report: str, readme: str = "README.md") -> None:
    text = Path(readme).read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    body = Path(report).read_text().strip()
    body = "\n".join(
        line for line in body.splitlines() if not line.startswith("# ")
    )  # drop the report's title
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    source = f"Generated from `{report}` by `scripts/readme_table.py`."
    Path(readme).write_text(f"{head}{START}\n{source}\n\n{body.strip()}\n{END}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:])
