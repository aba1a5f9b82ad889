# PYTHON_ARGCOMPLETE_OK  (argcomplete completes `visionray` when this marker is near the top)
"""``visionray``: run, list, show pipelines; serve the MLflow dashboard and registered models.

    visionray list
    visionray show quickstart train.epochs=3        # the sections quickstart uses, with the values it uses
    visionray show quickstart --help                 # each of those keys: type, default, help
    visionray run quickstart                       # embedded local Ray + ./mlruns
    visionray up / visionray down                  # a warm local Ray that runs attach to (no Ray start each run)
    RAY_ADDRESS=ray://head:10001 MLFLOW_TRACKING_URI=http://mlflow:5000 visionray run train model=resnet20
    visionray ui                                   # http://127.0.0.1:5000
    visionray serve fashion-mnist-classifier       # its champion, /invocations on http://127.0.0.1:5001
    visionray schedule --cron "0 3 * * *" retrain  # nightly, one machine, until stopped
    visionray submit --address http://head:8265 --follow quickstart train.epochs=3   # a Ray job
    visionray jobs list|status|logs|stop [JOB_ID]
    visionray models                               # registered models, versions, aliases, test metrics
    eval "$(register-python-argcomplete visionray)"   # tab completion in bash/zsh (argcomplete)

Exit status: 0 done; 2 bad usage, config or input (one sentence on stderr, nothing started);
1 the run failed (its MLflow run is marked FAILED with the error), or a tracking server or Ray
cluster could not be reached.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import traceback

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Errors a user causes (exit 2) and failures to reach a server or cluster (exit 1), by module: a module
#: that is not imported cannot have raised its errors, so telling them apart imports nothing.
_USER_ERRORS = {"pipelines.config.base": ("ConfigError",), "components.data.errors": ("DataError",),
                "components.package_safety": ("UnsafePackage",),
                "pipelines.services.tracking": ("TrackingUnavailable",),
                "pipelines.services.runtime": ("StorageNotShared",),
                "pipelines.entry.jobs": ("JobNotFound",), "pipelines.entry.serve": ("ServeError",)}
_CONNECTION_ERRORS = {"pipelines.services.tracking": ("StoreUnreachable",),
                      "pipelines.services.runtime": ("ClusterUnavailable",),
                      "pipelines.services.warm": ("WarmRuntimeError",)}


def exit_code_for(e: BaseException) -> int | None:
    """EXIT_FAILED for a connection failure, EXIT_USAGE for a user error, None for anything else (a bug)."""
    for table, code in ((_CONNECTION_ERRORS, EXIT_FAILED), (_USER_ERRORS, EXIT_USAGE)):
        for module, classes in table.items():
            loaded = sys.modules.get(module)
            if loaded is not None and isinstance(e, tuple(getattr(loaded, c) for c in classes)):
                return code
    return None


class _Parser(argparse.ArgumentParser):
    #: a subcommand that takes a PIPELINE sets these: its help then ends with the pipelines (read from
    #: conf/ only when the help is shown) and these examples
    lists_pipelines = False
    examples: tuple[str, ...] = ()

    def format_help(self) -> str:
        if self.lists_pipelines:
            from pipelines.config import describe_pipelines

            rows = describe_pipelines()
            width = max(len(n) for n, _ in rows)
            lines = ["pipelines (conf/pipeline/NAME.yaml):"]
            lines += [f"  {name:<{width}}  {description}" for name, description in rows]
            lines += ["", "examples:", *(f"  {e}" for e in self.examples)]
            self.epilog = "\n".join(lines + ["", _AFTER_A_RUN])
        return super().format_help()

    def error(self, message: str) -> None:  # argparse's own errors: one sentence, exit 2
        match = re.match(r"argument (\w+): invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if match:  # a misspelt command: name the closest one
            from pipelines.config.base import close_match

            choices = [c.strip(" '") for c in match.group(3).split(",")]
            guess = close_match(match.group(2), choices)
            if guess:
                message = f"'{match.group(2)}' is not a {self.prog} command; did you mean {guess}?"
        print(f"visionray: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print visionray's version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"visionray {version('visionray')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("visionray (not installed; run from a source checkout)")
        parser.exit()


_AFTER_A_RUN = ("After a run: `visionray ui` browses it in the MLflow dashboard; `visionray serve NAME` "
               "serves the registered model's champion over HTTP (`visionray serve fashion-mnist-classifier`); "
               "`visionray models` lists the registered models.")
_RUN_EXAMPLES = (
    "visionray run quickstart                                    # what `make run` runs",
    "visionray run quickstart train.epochs=3 model=resnet20      # a config group and a dotted key",
    "visionray run train data=cifar10 data.path=~/cifar-10-python.tar.gz cluster.num_workers=4",
    "visionray run sweep tune.num_samples=16",
    "visionray run quickstart stages=[ingest,preprocess]         # the first stages only",
    "visionray run quickstart resume=last                        # continue an interrupted run",
    "visionray run -v quickstart                                 # every line Ray and MLflow print, too",
    "visionray show quickstart --help                            # every key quickstart uses, with its help",
)
_SHOW_EXAMPLES = (
    "visionray show quickstart                 # the sections quickstart uses, with the values it will use",
    "visionray show train model=resnet56       # the same after overrides",
    "visionray show quickstart --help          # each of those keys: type, default, help (also --fields)",
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="visionray", description="CS231n-style vision training on Ray, tracked in MLflow.",
                epilog=_AFTER_A_RUN)
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run a pipeline (conf/pipeline/NAME.yaml) with key=value overrides",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.lists_pipelines, r.examples = True, _RUN_EXAMPLES
    r.add_argument("-v", "--verbose", action="store_true",
                   help="show every line Ray, Ray Data, Ray Train and MLflow print (default: the stages, the "
                        "epochs and real warnings)")
    _pipeline_arguments(r)
    sub.add_parser("list", help="the pipelines, one line each")
    s = sub.add_parser("show", help="print the config sections a pipeline uses, with the values it will use",
                       formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False,
                       usage="%(prog)s [-h | --fields] PIPELINE [key=value ...]")
    s.lists_pipelines, s.examples = True, _SHOW_EXAMPLES
    s.set_defaults(parser=s)
    s.add_argument("-h", "--help", action="store_true",
                   help="alone: this help; after PIPELINE: each key the pipeline uses, its type, default and help")
    s.add_argument("--fields", action="store_true", help="each key the pipeline uses, its type, default and help")
    _pipeline_arguments(s, optional=True)
    sm = sub.add_parser("submit", help="submit the same run as a Ray job to a cluster; prints the job id")
    sm.add_argument("--address", help="the cluster's dashboard URL (default: $RAY_ADDRESS if it is one, "
                                      "else http://127.0.0.1:8265)")
    sm.add_argument("--follow", action="store_true", help="stream the job's output; exit with its status")
    _pipeline_arguments(sm)
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
    _pipeline_arguments(c)
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
    w = sub.add_parser("up", help="start a warm local Ray (loopback only, token auth) that later runs attach to")
    w.add_argument("--num-cpus", type=int, default=None, metavar="N", help="CPUs it offers (default: all)")
    sub.add_parser("down", help="stop the warm local Ray of `visionray up` (its own processes only)")
    m = sub.add_parser("models", help="registered models: versions, aliases and test metrics")
    m.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. tracking.uri=http://mlflow:5000")
    return p


def _pipeline_arguments(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """PIPELINE and its key=value overrides, both completed by the shell (argcomplete)."""
    p.add_argument("pipeline", metavar="PIPELINE", nargs="?" if optional else None,
                   help="a file in conf/pipeline/ (visionray list)").completer = _complete_pipeline
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="GROUP=NAME picks conf/GROUP/NAME.yaml; a dotted key sets a value (train.epochs=3)"
                   ).completer = _complete_override


def _complete_pipeline(**_) -> list[str]:
    from pipelines.config import available

    return available("pipeline")


def _complete_override(prefix: str, **_) -> list[str]:
    from pipelines.config import GROUPS, available, usage

    key, eq, _value = prefix.partition("=")
    if eq:  # a group's files, or a key's allowed values
        values = available(key) if key in GROUPS else usage.value_choices(key)
        return [f"{key}={v}" for v in values]
    return [f"{g}=" for g in GROUPS] + [f"{k}=" for k in usage.all_keys()]


def _enable_completion(parser: argparse.ArgumentParser) -> None:
    if "_ARGCOMPLETE" not in os.environ:  # not called by the shell's completion: import nothing
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _enable_completion(parser)
    if argv is None:  # this process is `visionray ...` itself, not a caller handing it arguments
        from pipelines.services import startup

        startup.count_from_process_start()  # perf/startup_s: from `visionray run` to the first training step
        argv = sys.argv[1:]
    if not argv:  # bare `visionray`: the help, and the usage exit status (nothing was done)
        parser.print_help()
        return EXIT_USAGE
    args = parser.parse_args(_verbose_first(argv))
    if args.command == "run":  # before MLflow or Ray is imported
        from pipelines.services import quiet, runtime

        quiet.quiet_driver(args.verbose)
        runtime.ray_env()  # now: Ray reads RAY_DEDUP_LOGS_SKIP_REGEX when it is imported
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("visionray: interrupted; the MLflow run is marked KILLED.", file=sys.stderr)
        return 130
    except Exception as e:
        code = exit_code_for(e)
        if code is None:
            raise
        print(f"visionray: {_masked(e)}", file=sys.stderr)
        return code


def _verbose_first(argv: list[str]) -> list[str]:
    """``run``'s ``-v`` moved before PIPELINE: argparse takes it only before PIPELINE or after the last
    key=value, and a user types it anywhere (``visionray run quickstart -v train.epochs=1``)."""
    if argv[:1] != ["run"]:
        return argv
    flags = {"-v", "--verbose"}
    return ["run", *[a for a in argv[1:] if a in flags], *[a for a in argv[1:] if a not in flags]]


def _dispatch(args: argparse.Namespace) -> int:
    from pipelines import config

    if args.command == "list":
        rows = config.describe_pipelines()
        width = max(len(n) for n, _ in rows)
        for name, description in rows:
            print(f"{name:<{width}}  {description}")
        return EXIT_OK
    if args.command == "show":
        return _show(args)
    if args.command == "ui":
        return _ui(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "models":
        return _models(args)
    if args.command == "schedule":
        return _schedule(args)
    if args.command in ("up", "down"):
        return _warm(args)
    if args.command in ("submit", "jobs"):
        from pipelines.entry import jobs

        if args.command == "submit":
            return jobs.submit(args.pipeline, args.overrides, args.address, args.follow)
        return jobs.jobs(args.action, getattr(args, "job_id", None), args.address, getattr(args, "follow", False))
    cfg = config.load_config(args.pipeline, args.overrides)
    return _run(cfg, "visionray " + " ".join(shlex.quote(a) for a in ["run", args.pipeline, *args.overrides]))


def _warm(args: argparse.Namespace) -> int:
    from pipelines.services import runtime, warm

    if args.command == "down":
        stopped = warm.down()
        print(f"visionray: stopped the warm local Ray ({stopped} processes)." if stopped
              else "visionray: no warm local Ray is running.")
        return EXIT_OK
    if args.num_cpus is not None and args.num_cpus < 1:
        print("visionray: --num-cpus must be >= 1.", file=sys.stderr)
        return EXIT_USAGE
    if warm.current() is None:
        print("visionray: starting a warm local Ray (loopback only, token authentication) ...", flush=True)
    head, started = runtime.start_warm(args.num_cpus)
    how = f"started in {head['start_seconds']:.0f} s" if started else "already running"
    print(f"visionray: the warm local Ray at {head['address']} ({how}); `visionray run` attaches to it "
          f"until `visionray down`.")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from pipelines import config
    from pipelines.entry import describe

    if args.pipeline is None:
        if args.help:
            args.parser.print_help()
            return EXIT_OK
        args.parser.error("the following arguments are required: PIPELINE")
    cfg = config.load_config(args.pipeline, args.overrides)
    print(_masked(describe.fields_text(cfg) if args.help or args.fields else describe.effective_yaml(cfg)), end="")
    return EXIT_OK


def _run(cfg, command: str) -> int:
    from pipelines.dispatch import preflight, run_pipeline

    preflight(cfg)  # user errors surface here, before Ray or MLflow start
    try:
        run_pipeline(cfg, command)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        code = exit_code_for(e)
        if code is not None:
            print(f"visionray: {_masked(e)}", file=sys.stderr)
            return code
        if os.environ.get("VISIONRAY_DEBUG"):
            traceback.print_exc()
        print(f"visionray: the {cfg.pipeline} run failed: {type(e).__name__}: {_masked(_first_line(e))} "
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


def _masked(text: object) -> str:
    """A message for the terminal with credentials in any URI masked (pipelines.config.secrets)."""
    from pipelines.config.secrets import mask

    return mask(str(text))


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


def _missing_store(uri: str) -> str | None:
    """A sentence naming the SQLite file ``uri`` points at when there is no store there, else None."""
    from pathlib import Path

    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).is_file():
        return None
    return (f"no MLflow store at {uri[len('sqlite:///'):]}; run a pipeline in this directory first, or point "
            f"at a store with tracking.uri=URI or MLFLOW_TRACKING_URI.")


def _models(args: argparse.Namespace) -> int:
    from pipelines.entry import describe
    from pipelines.services import registry, tracking

    uri = _store_uri("models", args.overrides)
    missing = _missing_store(uri)
    if missing:
        print(f"visionray: {missing}", file=sys.stderr)
        return EXIT_USAGE
    tracking.check_store(uri)  # a server that does not answer: exit 1, naming it
    try:
        listing = registry.model_listing(uri)
    except registry.RegistryUnreadable as e:
        print(f"visionray: cannot read the registered models in {_masked(uri)} ({_masked(e)}).", file=sys.stderr)
        return EXIT_FAILED
    if not listing:
        print(f"visionray: no registered models in {_masked(uri)} yet; a pipeline's register stage adds them.",
              file=sys.stderr)
        return EXIT_OK
    print(describe.models_text(listing), end="")
    return EXIT_OK


def _ui(args: argparse.Namespace) -> int:
    from pipelines.services import tracking

    uri = _store_uri("ui", args.overrides)
    missing = _missing_store(uri)
    if missing:  # `mlflow server` would create an empty store here and show nothing
        print(f"visionray: {missing}", file=sys.stderr)
        return EXIT_USAGE
    if not tracking.is_local_uri(uri):
        tracking.check_store(uri)
        print(f"visionray: the tracking store is a server already: open {_masked(uri)}", file=sys.stderr)
        _print_landing(uri, uri)
        return EXIT_OK
    tracking.check_store(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    print(f"visionray: MLflow dashboard for {_masked(uri)} at http://{host}:{args.port} (Ctrl-C stops it)",
          file=sys.stderr)
    _print_landing(uri, f"http://{host}:{args.port}")
    sys.stdout.flush()
    # MLflow 3.18's server also starts a job executor (GenAI scorers and periodic trace tasks, unused here);
    # on 2 cores its start-up stalls the first page loads for ~20 s (the artifact viewer stays on "loading")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, cmd)
    return EXIT_OK  # not reached


def _print_landing(uri: str, base: str) -> None:
    """The model-training view of the latest run on stdout (one line: scripts read it), the rest on stderr."""
    from pipelines.services import dashboard

    try:
        where = dashboard.landing(uri, base)
    except Exception as e:  # a store that cannot take the saved views (read-only): the dashboard still serves
        print(f"visionray: no link to the latest run ({type(e).__name__}: {_first_line(e)})", file=sys.stderr)
        print(f"{base}/#/experiments?{dashboard.MODEL_TRAINING}")
        return
    print(where.url)
    if where.all_runs_url:
        print(f"visionray: above, {where.run_name} of {where.experiment} stage by stage; all its runs: "
              f"{where.all_runs_url}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
