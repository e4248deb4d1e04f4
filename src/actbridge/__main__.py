"""Command line: ``python -m actbridge ship results/models/sender [resources/models]``.

``ship`` copies a micro model trained by the pipeline under
``<shipped root>/<recipe hash>/`` so that later runs with the same recipe
reuse it instead of training.
"""

from __future__ import annotations

import argparse

from actbridge.models.loading import ship_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actbridge")
    commands = parser.add_subparsers(dest="command", required=True)
    ship = commands.add_parser("ship", help="store a trained micro model as shipped weights")
    ship.add_argument("model_dir", help="e.g. results/models/receiver")
    ship.add_argument("shipped_root", nargs="?", default="resources/models")
    args = parser.parse_args(argv)
    if args.command == "ship":
        print(ship_model(args.model_dir, args.shipped_root))


if __name__ == "__main__":
    main()
