"""Command line: ``python -m actbridge ship results/models/sender [resources/models]`` and
``python -m actbridge verify [results]``.

``ship`` copies a micro model trained by the pipeline under
``<shipped root>/<recipe hash>/`` so that later runs with the same recipe
reuse it instead of training.

``verify`` checks every output under a results directory against its seal (``*.sha256``, ``SHA256SUMS``) and
moves aside what does not match, so that the next ``snakemake`` rebuilds it: run it before
``snakemake --report`` when outputs may have been edited or copied, since building a report runs no job.
"""

from __future__ import annotations

import argparse

from actbridge.integrity import verify_outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actbridge")
    commands = parser.add_subparsers(dest="command", required=True)
    ship = commands.add_parser("ship", help="store a trained micro model as shipped weights")
    ship.add_argument("model_dir", help="e.g. results/models/receiver")
    ship.add_argument("shipped_root", nargs="?", default="resources/models")
    verify = commands.add_parser("verify", help="check every output against its seal; move aside what fails")
    verify.add_argument("results", nargs="?", default="results")
    args = parser.parse_args(argv)
    if args.command == "ship":
        from actbridge.models.micro import ship_model  # torch: only for this command

        print(ship_model(args.model_dir, args.shipped_root))
    elif args.command == "verify":
        failed = verify_outputs(args.results)
        for problem in failed:
            print(problem)
        print(f"{len(failed)} output(s) moved aside: run snakemake again to rebuild them" if failed
              else f"every output under {args.results} matches its seal")
        raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
