"""The `sona` command: `sona demo` (the main job), `sona bench`, `sona info`, `sona serve`,
`sona params`."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, backends, build_info, cpu_features, demo, get_backend
from .data import EMBEDDINGS


def _info(args: argparse.Namespace) -> int:
    import platform
    import shlex

    import numpy

    build = build_info()
    info = {
        "version": __version__,
        "backend": get_backend(),
        "backends": backends(),
        "compiled_backends": build["compiled_backends"],
        "cpu_features": cpu_features(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "platform": f"{sys.platform}-{platform.machine()}",
        # how sona._core was compiled, recorded by setup.py (not the interpreter's CFLAGS)
        "compile_command": " ".join(shlex.quote(a) for a in build["compile_command"]),
        "sona_compile_args": " ".join(shlex.quote(a) for a in build["extra_compile_args"]),
        "built_with": f"{build['compiler']} compiler, Cython {build['cython']}, "
        f"numpy {build['numpy']}, Python {build['python']} on {build['platform']}",
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:18} {value}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import benchmark

    result = benchmark.run(quick=args.quick)
    print(json.dumps(result, indent=2) if args.json else benchmark.format_table(result))
    return 0


def _params(args: argparse.Namespace) -> int:
    from . import params

    if args.markdown:
        print(params.markdown_table(), end="")
    elif args.json:
        print(json.dumps([{"name": p.name, "type": p.kind.__name__, "default": p.default,
                           "range": p.bounds, "part": p.part, "live": p.live, "doc": p.doc,
                           "since": p.since} for p in params.ROUTER_PARAMS], indent=2))
    else:
        for p in params.ROUTER_PARAMS:
            state = "live" if p.live else "fixed"
            print(f"{p.name:19} {p.kind.__name__:5} {p.default!r:8} {p.bounds or '':16} "
                  f"{p.part:11} {state:5}  {p.doc}")
    return 0


_SYNTHETIC_ONLY = {"dim": "--dim", "drift": "--drift/--no-drift"}
_REAL_ONLY = {"embedding": "--embedding", "cost_weight": "--cost-weight"}


def _demo(args: argparse.Namespace) -> int:
    wrong = _REAL_ONLY if args.data == "synthetic" else _SYNTHETIC_ONLY
    given = [flag for key, flag in wrong.items() if getattr(args, key) is not None]
    if given:
        other = "real" if args.data == "synthetic" else "synthetic"
        print(f"sona demo: error: {', '.join(given)} applies to --data {other} only",
              file=sys.stderr)
        return 2
    if args.data == "real":
        from . import demo_real

        return demo_real.main(
            queries=args.queries,
            seed=args.seed,
            embedding=args.embedding or "minilm",
            window=args.window,
            cost_weight=args.cost_weight,
            plot_path=args.plot,
            save_path=args.save,
            as_json=args.json,
        )
    return demo.main(
        queries=args.queries,
        seed=args.seed,
        dim=256 if args.dim is None else args.dim,
        window=args.window,
        drift=True if args.drift is None else args.drift,
        plot_path=args.plot,
        save_path=args.save,
        as_json=args.json,
    )


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


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


def _serve_router(args: argparse.Namespace):
    """The router `sona serve` serves: loaded from --state, or new from --routes and --dim
    (saved to --state at once when given, so the file exists from the start)."""
    import os

    from .router import Router

    routes = None if args.routes is None else [r.strip() for r in args.routes.split(",")]
    if args.state is not None and os.path.exists(args.state):
        router = Router.load(args.state)
        if routes is not None and list(router.routes) != routes:
            raise ValueError(f"--routes {args.routes} differ from the routes of {args.state}: "
                             f"{','.join(router.routes)}")
        if args.dim is not None and args.dim != router.micro.dim:
            raise ValueError(f"--dim {args.dim} differs from the dimension of {args.state}: "
                             f"{router.micro.dim}")
        return router
    if routes is None or args.dim is None:
        where = f"{args.state} does not exist: " if args.state is not None else ""
        raise ValueError(f"{where}give --routes a,b,... and --dim N to create a router")
    router = Router(routes, hidden_dim=args.dim, seed=args.seed)
    if args.state is not None:
        router.save(args.state)
    return router


def _serve(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from .serve import create_app
    except ImportError as exc:
        print(f'sona serve: error: {exc.name} is not installed: pip install "sona[serve]"',
              file=sys.stderr)
        return 2
    if args.checkpoint_every is not None and args.state is None:
        print("sona serve: error: --checkpoint-every needs --state FILE", file=sys.stderr)
        return 2
    token = args.token if args.token is not None else os.environ.get("SONA_SERVE_TOKEN") or None
    try:
        router = _serve_router(args)
    except (OSError, ValueError, TypeError) as exc:
        print(f"sona serve: error: {exc}", file=sys.stderr)
        return 2
    fleet = None
    if args.fleet is not None:
        try:
            from .fleet import FleetRouter

            fleet = FleetRouter(router, args.fleet, stream=args.stream)
        except ImportError as exc:
            print(f'sona serve: error: {exc.name} is not installed: pip install "sona[redis]"',
                  file=sys.stderr)
            return 2
        except (OSError, ValueError, TypeError) as exc:
            print(f"sona serve: error: --fleet {args.fleet}: {exc}", file=sys.stderr)
            return 2
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"sona serve: warning: listening on {args.host} without a token (--token or "
              "SONA_SERVE_TOKEN): anyone who reaches the port can route and teach the router",
              file=sys.stderr)
    try:
        app = create_app(router if fleet is None else fleet, token=token,
                         max_body=args.max_body, decision_ttl_s=args.decision_ttl,
                         max_pending=args.max_pending, checkpoint_path=args.state,
                         checkpoint_every_s=args.checkpoint_every, budget=args.budget)
    except (OSError, ValueError) as exc:  # a saved pacer or pending file that cannot be loaded
        if fleet is not None:
            fleet.close()
        print(f"sona serve: error: {exc}", file=sys.stderr)
        return 2
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown: the app's lifespan then saves --state
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    access_log=args.access_log)
    finally:
        if fleet is not None:
            fleet.close()
    return 0


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0, got 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sona", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sona {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo",
        help="an adaptive router learns on a real query stream (the main job)",
        description="An adaptive sona.Router learns which LLM serves each query, from one quality "
        "score per query. --data real (default): the packaged RouterBench outcomes of 11 real "
        "LLMs on real queries, against the best single model and a router told each query's "
        "task. --data synthetic: 4 simulated models, 8 kinds of query, the best model of two "
        "kinds changing a third of the way in. Progress goes to stderr, the table to stdout.",
    )
    p.add_argument(
        "--data",
        choices=["real", "synthetic"],
        default="real",
        help="real LLM outcomes (default) or the simulated stream with drift",
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
        default=None,
        metavar="D",
        help="synthetic: embedding dimension (default 256)",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed (default 0)")
    p.add_argument(
        "--drift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="synthetic: change the best route of 2 clusters a third of the way in (default on)",
    )
    p.add_argument(
        "--embedding",
        choices=sorted(EMBEDDINGS),
        default=None,
        help="real: the query embedding (default minilm)",
    )
    p.add_argument(
        "--cost-weight",
        type=_non_negative_float,
        default=None,
        metavar="W",
        help="real: the trade-off of the cost section, quality given up per $ of one call "
        "(needs a cost-aware router)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help='write the learning curve (needs matplotlib: pip install "sona[plot]")',
    )
    p.add_argument("--save", metavar="PATH", help="save the trained router (router.save)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "info", help="version, backends, CPU features, and the compile flags of this build"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="performance table against the targets, numpy alongside")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quick", action="store_true", help="fewer repeats, d=256 only")
    p.set_defaults(func=_bench)
    p = sub.add_parser(
        "params",
        help="the router's hyper-parameters: type, default, range, part, live or fixed, doc",
        description="Every sona.Router hyper-parameter (sona.params.ROUTER_PARAMS). Live ones "
        "may change on a running router (router.set_params); fixed ones are set when it is "
        "built.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="the table README.md holds")
    fmt.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_params)
    p = sub.add_parser(
        "serve",
        help='the router as an HTTP service for gateways (needs pip install "sona[serve]")',
        description="Serve a sona.Router over HTTP: POST /v1/route, /v1/feedback, /v1/outcomes, "
        "/v1/budget; "
        "GET /v1/stats, /metrics, /healthz. Ctrl-C or SIGTERM saves --state before exiting.",
    )
    p.add_argument("--state", metavar="FILE", help="router state file: loaded if it exists, "
                   "created from --routes/--dim otherwise; saved at shutdown, with the decisions "
                   "waiting for feedback and a paced budget beside it (FILE.pending, "
                   "FILE.budget), both resumed at start")
    p.add_argument("--routes", metavar="A,B,...", help="route names of a new router")
    p.add_argument("--dim", type=_int_at_least(1), metavar="N",
                   help="embedding dimension of a new router")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of a new router (default 0)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_int_at_least(0, 65535), default=8000,
                   help="port (default 8000)")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN (default: the "
                   "SONA_SERVE_TOKEN environment variable; none if unset)")
    p.add_argument("--checkpoint-every", type=_positive_float, metavar="S",
                   help="also save --state every S seconds when the router changed")
    p.add_argument("--fleet", metavar="REDIS_URL", help="share learning with every server on "
                   "the same Redis stream (sona.fleet; pip install \"sona[redis]\")")
    p.add_argument("--stream", default="sona:outcomes",
                   help="the fleet's Redis stream (default sona:outcomes)")
    p.add_argument("--budget", type=_positive_float, metavar="COST",
                   help="pace this mean cost per query (in the unit of the feedback's costs; "
                   "sona.BudgetPacer): routes without a cost_weight use its weight, and feedback "
                   "must then report the cost (POST /v1/budget changes it); replaces the budget "
                   "of a pacer resumed from --state")
    p.add_argument("--decision-ttl", type=_positive_float, default=600.0, metavar="S",
                   help="seconds a decision waits for its feedback (default 600)")
    p.add_argument("--max-pending", type=_int_at_least(1), default=10_000, metavar="N",
                   help="most decisions waiting for feedback (default 10000)")
    p.add_argument("--max-body", type=_int_at_least(1), default=4 << 20, metavar="BYTES",
                   help="largest request body (default 4 MiB)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                   help="log every request (default off)")
    p.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
