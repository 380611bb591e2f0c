"""The `sona` command: `sona demo` (the main job), `sona bench`, `sona info`."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, backends, cpu_features, demo, get_backend


def _info(args: argparse.Namespace) -> int:
    import sysconfig

    import numpy

    info = {
        "version": __version__,
        "backend": get_backend(),
        "backends": backends(),
        "cpu_features": cpu_features(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "platform": sysconfig.get_platform(),
        "compiler_flags": sysconfig.get_config_var("CFLAGS") or "",
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:14} {value}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import benchmark

    result = benchmark.run(quick=args.quick)
    print(json.dumps(result, indent=2) if args.json else benchmark.format_table(result))
    return 0


def _demo(args: argparse.Namespace) -> int:
    return demo.main(
        queries=args.queries,
        seed=args.seed,
        dim=args.dim,
        window=args.window,
        drift=args.drift,
        plot_path=args.plot,
        save_path=args.save,
        as_json=args.json,
    )


def _int_at_least(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sona", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sona {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo",
        help="an adaptive router learns on a simulated query stream (the main job)",
        description="An adaptive sona.Router learns which of 4 simulated models serves each of 8 "
        "kinds of query, from one quality score per query, next to a static baseline (always the "
        "globally best model). Progress goes to stderr, the table to stdout.",
    )
    p.add_argument(
        "--queries",
        type=_int_at_least(1),
        default=3000,
        metavar="N",
        help="queries routed and fed back (default 3000)",
    )
    p.add_argument(
        "--window",
        type=_int_at_least(1),
        default=250,
        metavar="N",
        help="feedbacks per table row (default 250)",
    )
    p.add_argument(
        "--dim",
        type=_int_at_least(demo.MIN_DIM, demo.MAX_DIM),
        default=256,
        metavar="D",
        help="embedding dimension (default 256)",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed (default 0)")
    p.add_argument(
        "--drift",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="change the best route of 2 clusters a third of the way in (default on)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help='write the learning curve (needs matplotlib: pip install "sona[plot]")',
    )
    p.add_argument("--save", metavar="PATH", help="save the trained router (router.save)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_demo)
    p = sub.add_parser("info", help="version, active backend, CPU features, build flags")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="performance table against the targets, numpy alongside")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quick", action="store_true", help="fewer repeats, d=256 only")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
