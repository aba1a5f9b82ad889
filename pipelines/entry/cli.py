"""``visionray``: run, list, show pipelines; serve the MLflow dashboard and registered models.

    visionray list
    visionray show quickstart train.epochs=3
    visionray run quickstart                       # embedded local Ray + ./mlruns
    RAY_ADDRESS=ray://head:10001 MLFLOW_TRACKING_URI=http://mlflow:5000 visionray run train model=resnet20
    visionray ui                                   # http://127.0.0.1:5000
    visionray serve fashion-mnist-classifier       # its champion, /invocations on http://127.0.0.1:5001
    visionray schedule --cron "0 3 * * *" retrain  # nightly, one machine, until stopped
    visionray submit --address http://head:8265 --follow quickstart train.epochs=3   # a Ray job
    visionray jobs list|status|logs|stop [JOB_ID]

Exit status: 0 done; 2 bad usage, config or input (one sentence on stderr, nothing started);
1 the run failed (its MLflow run is marked FAILED with the error).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one sentence, exit 2
        print(f"visionray: {message} (see visionray --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


_AFTER_A_RUN = ("After a run: `visionray ui` browses it in the MLflow dashboard; `visionray serve NAME` "
               "serves the registered model's champion over HTTP (`visionray serve fashion-mnist-classifier`).")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="visionray", description="CS231n-style vision training on Ray, tracked in MLflow.",
                epilog=_AFTER_A_RUN)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run a pipeline (conf/pipeline/NAME.yaml) with key=value overrides",
                       epilog=_AFTER_A_RUN)
    r.add_argument("pipeline")
    r.add_argument("overrides", nargs="*", metavar="key=value")
    sub.add_parser("list", help="the pipelines, one line each")
    s = sub.add_parser("show", help="print the resolved config and exit")
    s.add_argument("pipeline")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    sm = sub.add_parser("submit", help="submit the same run as a Ray job to a cluster; prints the job id")
    sm.add_argument("--address", help="the cluster's dashboard URL (default: $RAY_ADDRESS if it is one, "
                                      "else http://127.0.0.1:8265)")
    sm.add_argument("--follow", action="store_true", help="stream the job's output; exit with its status")
    sm.add_argument("pipeline")
    sm.add_argument("overrides", nargs="*", metavar="key=value")
    jobs = sub.add_parser("jobs", help="list, watch and stop submitted jobs").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    for action, text in (("list", "the cluster's jobs, oldest first"), ("status", "a job's status"),
                         ("logs", "a job's output"), ("stop", "stop a job")):
        j = jobs.add_parser(action, help=text)
        j.add_argument("--address", help="the cluster's dashboard URL (as for submit)")
        if action != "list":
            j.add_argument("job_id", metavar="JOB_ID")
        if action == "logs":
            j.add_argument("--follow", action="store_true", help="stream until the job ends; exit with its status")
    c = sub.add_parser("schedule", help="run a pipeline on a cron schedule from one machine, until stopped")
    c.add_argument("--cron", required=True, metavar="EXPR", help="five-field cron expression, local time "
                                                                 "(e.g. '0 3 * * *': daily at 3 a.m.)")
    c.add_argument("--max-runs", type=int, default=0, metavar="N", help="stop after N runs (default: never)")
    c.add_argument("pipeline")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    u = sub.add_parser("ui", help="serve the MLflow dashboard of the configured store on 127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    u.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. tracking.uri=sqlite:///other.db")
    v = sub.add_parser("serve", help="serve a registered model over HTTP (/invocations, as mlflow models serve)")
    v.add_argument("model", metavar="NAME[@alias|/version]", help="a registered model; NAME alone serves "
                                                                 "NAME@champion, NAME/3 serves version 3")
    v.add_argument("--port", type=int, default=5001, help="default: 5001 (the dashboard takes 5000)")
    v.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    v.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (default: 1)")
    v.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. tracking.uri=http://mlflow:5000")
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    from components.data.errors import DataError
    from pipelines.config import ConfigError
    from pipelines.entry.jobs import JobNotFound
    from pipelines.entry.serve import ServeError
    from pipelines.services.runtime import ClusterUnavailable, StorageNotShared
    from pipelines.services.tracking import TrackingUnavailable

    return (ConfigError, DataError, TrackingUnavailable, ClusterUnavailable, JobNotFound, StorageNotShared,
            ServeError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    user_errors = _user_errors()
    try:
        return _dispatch(args)
    except user_errors as e:
        print(f"visionray: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("visionray: interrupted; the MLflow run is marked KILLED.", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from pipelines import config

    if args.command == "list":
        rows = config.describe_pipelines()
        width = max(len(n) for n, _ in rows)
        for name, description in rows:
            print(f"{name:<{width}}  {description}")
        return EXIT_OK
    if args.command == "show":
        print(config.dump(config.load_config(args.pipeline, args.overrides)), end="")
        return EXIT_OK
    if args.command == "ui":
        return _ui(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "schedule":
        return _schedule(args)
    if args.command in ("submit", "jobs"):
        from pipelines.entry import jobs

        if args.command == "submit":
            return jobs.submit(args.pipeline, args.overrides, args.address, args.follow)
        return jobs.jobs(args.action, getattr(args, "job_id", None), args.address, getattr(args, "follow", False))
    cfg = config.load_config(args.pipeline, args.overrides)
    return _run(cfg, "visionray " + " ".join(shlex.quote(a) for a in ["run", args.pipeline, *args.overrides]))


def _run(cfg, command: str) -> int:
    from pipelines.dispatch import preflight, run_pipeline

    preflight(cfg)  # user errors surface here, before Ray or MLflow start
    try:
        run_pipeline(cfg, command)
    except _user_errors() as e:
        print(f"visionray: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if os.environ.get("VISIONRAY_DEBUG"):
            traceback.print_exc()
        print(f"visionray: the {cfg.pipeline} run failed: {type(e).__name__}: {_first_line(e)} "
              f"(full error in the MLflow run's error.txt; VISIONRAY_DEBUG=1 prints it here).", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _schedule(args: argparse.Namespace) -> int:
    from pipelines import config
    from pipelines.entry import schedule

    schedule.check_cron(args.cron)
    config.load_config(args.pipeline, args.overrides)  # a bad key stops here, not at 3 a.m.
    schedule.Scheduler(args.cron, schedule.run_command(args.pipeline, args.overrides), max_runs=args.max_runs).run()
    return EXIT_OK


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""


def _store_uri(command: str, overrides: list[str]) -> str:
    """The tracking store a command without a pipeline uses: tracking.uri=URI, else as every run does."""
    from pipelines import config
    from pipelines.services import tracking

    cfg_uri = None
    for o in overrides:
        key, _, value = o.partition("=")
        if key != "tracking.uri":
            raise config.ConfigError(f"visionray {command} takes only tracking.uri=URI, not '{o}'.")
        cfg_uri = value
    return tracking.resolve_uri(cfg_uri)


def _serve(args: argparse.Namespace) -> int:
    from pipelines.entry import serve
    from pipelines.services import tracking

    uri = _store_uri("serve", args.overrides)
    if not uri.startswith("sqlite:///"):
        tracking.check_store(uri)  # a server that does not answer: one sentence naming it
    return serve.serve(uri, args.model, args.host, args.port, args.workers)


def _ui(args: argparse.Namespace) -> int:
    from pipelines.services import tracking

    uri = _store_uri("ui", args.overrides)
    if not tracking.is_local_uri(uri):
        print(f"visionray: the tracking store is a server already: open {uri}", file=sys.stderr)
        return EXIT_OK
    tracking.check_store(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    print(f"visionray: MLflow dashboard for {uri} at http://{args.host}:{args.port} (Ctrl-C stops it)",
          file=sys.stderr)
    os.execv(sys.executable, cmd)
    return EXIT_OK  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
