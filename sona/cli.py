"""The `sona` command: `sona demo` (the main job), `sona bench`, `sona info`."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, backends, cpu_features, get_backend


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sona", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sona {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
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
