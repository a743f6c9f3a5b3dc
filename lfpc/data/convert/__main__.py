"""Command line: ``python -m lfpc.data.convert SOURCE IN OUT [--image-root DIR] [--limit N]``."""

from __future__ import annotations

import argparse
import json

from lfpc.data.convert import SOURCES, convert_file


def main(argv: list[str] | None = None) -> None:
    """Convert one source file, print its kept / dropped report."""
    parser = argparse.ArgumentParser(prog="python -m lfpc.data.convert", description=__doc__)
    parser.add_argument("source", choices=sorted(SOURCES))
    parser.add_argument("input", help="the source's file (parquet or JSON)")
    parser.add_argument("output", help="the JSONL to write; rerun with the same path to resume")
    parser.add_argument("--image-root", default=None,
                        help="folder the source's relative image paths start at (default: the input's folder)")
    parser.add_argument("--limit", type=int, default=None, help="convert at most this many source rows")
    args = parser.parse_args(argv)
    try:
        report = convert_file(SOURCES[args.source], args.input, args.output, args.image_root, args.limit)
    except (ValueError, FileNotFoundError, RuntimeError) as err:  # bad input, a refused output: the message says which
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(report.to_json(), indent=2))


if __name__ == "__main__":
    main()
