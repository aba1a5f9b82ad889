"""One Ray runtime per pipeline run: the cluster named by ``RAY_ADDRESS``/``cluster.address``, else an
embedded local Ray sized by ``cluster.num_cpus``. Stages never call ``ray.init`` themselves::

    with runtime.ray_session(cfg.cluster):
        ...  # Ray Data, Ray Train

Token authentication stays as Ray sets it (on for local clusters since Ray 2.59): ``ray.init`` of a
local cluster generates and uses a token; a remote cluster needs ``RAY_AUTH_TOKEN`` or the token file.

On a multi-node cluster every node must see the same files under ``cluster.storage_path`` and
``data.cache_dir``: :func:`check_shared_storage` proves it before anything trains.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Self

from pipelines.config import CONF_DIR, ClusterConfig
from pipelines.services import warm

_ROOT = Path(__file__).resolve().parents[2]


class ClusterUnavailable(RuntimeError):
    """The Ray cluster cannot be reached; the message names the address."""


def ray_address(cluster: ClusterConfig) -> str | None:
    return cluster.address or os.environ.get("RAY_ADDRESS") or None


def client_mode(cluster: ClusterConfig) -> bool:
    """A ``ray://`` address: this process is a Ray Client, not a Ray worker. Ray Data's executor and Ray
    Train's controller need a worker's core (``'Worker' object has no attribute 'core_worker'``), so the
    pipeline's flow runs as a task on the cluster (``dispatch.on_cluster``)."""
    return (ray_address(cluster) or "").startswith("ray://")


def worker_threads(cluster: ClusterConfig) -> int:
    """Threads per training worker: explicit, else the machine's cores shared by the workers.

    Two workers with torch's default (all cores each) over-subscribe two cores: measured 0.35x.
    """
    if cluster.torch_threads:
        return cluster.torch_threads
    cores = cluster.num_cpus or os.cpu_count() or 1
    return max(1, cores // cluster.num_workers)


#: Ray settings every visionray process and Ray worker runs with, unless the user's environment sets them.
#: Ray reads them from the environment of each process it starts: a local Ray inherits the driver's
#: environment, a remote cluster gets them through the runtime_env (``shipped_code``, the job's env_vars).
RAY_ENV = {
    # Ray Data prints a progress bar per operator; the driver prints one line per epoch instead.
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    # Ray Data logs a line per dataset execution (every epoch, every split) at INFO: keep its warnings
    # only. Set it to INFO to debug.
    "RAY_DATA_LOG_LEVEL": "WARNING",
    # Ray Train's controller polls its workers at this interval and learns only then that they started or
    # finished: at Ray's default (2 s) a fit() of a no-op loop on 2 workers took 11.6-12.4 s here, at 0.25 s
    # 6.6-8.4 s. Every training run, sweep trial and compress fine-tune pays it (docs/results.md, start-up).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # Lines of Ray's own processes that the driver does not print (Ray's log files keep them), read when
    # the driver imports ray: Ray Train's data config passing Ray Data a deprecated option (the warning and
    # its source line), Ray Data's notice that the progress bars visionray turned off are off, and the GCS
    # failing to kill an actor whose process had already exited (its socket closed) at the end of a stage.
    "RAY_DEDUP_LOGS_SKIP_REGEX": r"`ExecutionOptions\.exclude_resources` is deprecated"
                                 r"|^\s+self\.exclude_resources = exclude_resources$"
                                 r"|^Progress bars disabled\. To enable"
                                 r"|\(gcs_server\) gcs_actor_scheduler\.cc:\d+: Failed to kill actor \S+, return "
                                 r"status: Invalid: KillActor RPC failed for actor \S+: RpcError: RPC error: "
                                 r"Socket closed",
}
#: The keys of ``RAY_ENV`` that only quiet the terminal: ``visionray run -v`` leaves them at Ray's defaults.
QUIET_KEYS = frozenset({"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "RAY_DATA_LOG_LEVEL", "RAY_DEDUP_LOGS_SKIP_REGEX"})
#: Only for the embedded local Ray: a laptop is not a spot instance. Ray Train's preemption watcher is one
#: more actor per fit asking whether the node is being drained, and its kill at the end of each fit put a
#: GCS "Failed to kill actor" error line in the terminal (tests/pipelines/fitfloor.py: no measurable time).
#: And a one-node Ray's address is loopback: Ray's servers (GCS, raylet, every worker's gRPC server, the
#: dashboard and runtime-env agents) listen on 127.0.0.1 only when the node's address is loopback, and on
#: all interfaces otherwise. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own switch for "no other
#: node will join": a node then takes the loopback address, and so does every driver started from this
#: process (a CLI subprocess joining it by ``RAY_ADDRESS``); ``ray.init(_node_ip_address="127.0.0.1")``
#: cannot do it, Ray rewrites that to the machine's outward address.
#: (Preloading torch and the training code into the workers Ray starts ahead, RAY_preload_python_modules,
#: was measured and left out: start-up 26.1 s against 23.5 s (medians), peak memory 3.8 against 3.1 GiB on
#: 2 cores, where those imports compete with the driver's own work; tests/pipelines/warmstart.py --preload.)
#: And Ray starts its workers at nice 15, so that on a shared cluster node its own daemons stay responsive
#: under load. On a laptop the workers are the job the user asked for: at 15 every process at nice 0 (the
#: driver, Ray's daemons, anything else running) preempts them, and a ``torch.distributed.run`` process
#: would run at 0, so the bench's Ray Train against native DDP compared unequal priorities. Measured
#: (docs/results.md, bench): in the loop 0.96-0.98 at 15, 0.94-1.03 at 0 (three runs each), within the
#: runs' spread; start-up unchanged. The daemons at 0 still get their fair share of a core.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                 "RAY_worker_niceness": "0"}


def ray_env(local: bool = False) -> dict[str, str]:
    """``RAY_ENV`` (and ``LOCAL_RAY_ENV`` for a local Ray) with the user's own values where set; also
    written into this process's environment. With ``visionray run -v``, without ``QUIET_KEYS`` and with
    the verbose flag itself, so that every worker and a submitted job's driver show everything too."""
    from pipelines.services import quiet

    wanted = {**RAY_ENV, **(LOCAL_RAY_ENV if local else {})}
    if quiet.verbose():
        wanted = {key: value for key, value in wanted.items() if key not in QUIET_KEYS}
        wanted[quiet.VERBOSE_ENV] = "1"
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in wanted}


def shipped_code() -> dict:
    """The runtime_env that carries this checkout's code, conf/ and ``RAY_ENV`` to a remote cluster's workers."""
    import components
    import pipelines

    folders = [Path(components.__file__).parent, Path(pipelines.__file__).parent, CONF_DIR]
    return {"py_modules": [str(f) for f in folders], "excludes": ["**/__pycache__/**"], "env_vars": ray_env()}


@contextlib.contextmanager
def ray_session(cluster: ClusterConfig) -> Iterator[None]:
    import ray

    if ray.is_initialized():  # a caller (a test, a Ray job) owns the runtime: use it, leave it up
        yield
        return
    address = ray_address(cluster)
    ray_env()
    kwargs: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address and not inside_ray_job():
        # A remote cluster does not have this checkout: ship the two packages and conf/ (workers that
        # rebuild a config read it: pipelines.config.CONF_DIR) with the driver. Inside a Ray job
        # (visionray submit) the job's working_dir already carries them, and Ray refuses a second
        # runtime_env that sets the same fields.
        kwargs["runtime_env"] = shipped_code()
    warm_head = None if address else warm.current()
    if address:
        _use_given_token()
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            hint = "" if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") else (
                "; if it uses token authentication, set RAY_AUTH_TOKEN to `ray get-auth-token` of the head")
            raise ClusterUnavailable(f"cannot connect to the Ray cluster at {address} ({e}){hint}.") from None
    elif warm_head:
        attach_warm(warm_head, cluster.num_cpus, **kwargs)
    else:
        init_local(cluster.num_cpus or None, **kwargs)
    _quiet_ray_data()
    try:
        yield
    finally:
        ray.shutdown()
        _WARM_TEMP_DIR.clear()
        if not address:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)


def _use_given_token() -> None:
    """A token given in the environment means token authentication (unless RAY_AUTH_MODE says otherwise).

    Ray turns token mode on by itself only for a local cluster it finds; for an explicit address it
    needs RAY_AUTH_MODE=token, which users forget: the GCS then answers "InvalidAuthToken" in a loop.
    """
    if os.environ.get("RAY_AUTH_MODE") or not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        return
    _token_mode()


def _token_mode() -> None:
    """Token authentication for this driver: sets RAY_AUTH_MODE=token and refreshes Ray's cached config."""
    from ray._private.authentication.authentication_token_setup import (
        _enable_token_auth,
    )

    _enable_token_auth()


def inside_ray_job() -> bool:
    """True in the driver of a submitted Ray job (Ray sets this variable for it)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


class StorageNotShared(ValueError):
    """A multi-node cluster whose nodes do not all see a local storage path; names the key and path."""


def check_shared_storage(paths: dict[str, str], timeout_s: float = 120) -> None:
    """On a cluster of more than one node, prove that every node sees each local path in ``paths``.

    ``paths`` maps a config key to its value. URIs (``s3://``, ``gs://``, …) are shared by nature and
    skipped. For a local path, the driver writes a marker file there and a zero-CPU task pinned to each
    alive node looks for it; a node that cannot see it means checkpoints or shards written on one node
    would be missing on another, which Ray would report only deep inside training.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    for key, value in paths.items():
        if "://" in value and not value.startswith("file://"):
            continue
        root = Path(value.removeprefix("file://")).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        marker = root / f".visionray-shared-{uuid.uuid4().hex}"
        marker.write_text("visible from every node\n")
        try:
            probe = ray.remote(num_cpus=0)(_exists)
            refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(marker)) for n in nodes]
            seen = ray.get(refs, timeout=timeout_s)
        finally:
            marker.unlink(missing_ok=True)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
        if blind:
            raise StorageNotShared(
                f"{key}={value} is not shared storage: node(s) {', '.join(blind)} of this {len(nodes)}-node "
                f"cluster cannot see {root}; use a path on NFS mounted at the same place on every node, "
                f"or an s3:// or gs:// URI.")


def _exists(path: str) -> bool:
    return os.path.exists(path)


def init_local(num_cpus: int | None, **kwargs) -> None:
    """Start an embedded local Ray (token auth as Ray sets it), all of its servers on loopback.

    The dashboard serves Ray's State API, which Ray Train's controller polls. Its port is chosen
    here and exported (inherited by every Ray process started below), so the State API finds *this*
    cluster even when another local Ray runs beside it (two pipelines at once, a test session).
    """
    import psutil
    import ray

    _one_node()
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 **kwargs)
    except BaseException:
        # A start that fails half-way (a timeout on a loaded machine) leaves the GCS, dashboard and
        # monitors it had already started running, with nobody to stop them: stop them here.
        ray.shutdown()
        _kill_new_children(before)
        os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        raise
    _quiet_ray_data()


def _one_node() -> None:
    """This process's Ray settings for a one-node runtime (``LOCAL_RAY_ENV``), before ``ray.init``: every Ray
    process it starts inherits them, and this process takes the loopback address too."""
    ray_env(local=True)
    from ray._private import ray_constants

    # Ray read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when this process imported it, maybe before ray_env set it.
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")


def attach_warm(head: dict, num_cpus: int | None = None, **kwargs) -> None:
    """Join the warm local Ray of ``visionray up`` (pipelines.services.warm) instead of starting one; its
    size was fixed by ``up --num-cpus``, so a different ``cluster.num_cpus`` is said, not applied."""
    import ray

    from pipelines.services.progress import say

    _one_node()
    os.environ["RAY_API_SERVER_ADDRESS"] = head["dashboard"]  # Ray Train's State API: this head's dashboard
    if not os.environ.get("RAY_AUTH_MODE"):  # Ray turned token authentication on for the head; a driver
        _token_mode()  # given its address must say so
    ray.init(address=head["address"], **kwargs)
    _WARM_TEMP_DIR[:] = [head["temp_dir"]]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    say(f"ray: the warm local Ray at {head['address']} ({cpus} CPUs; `visionray down` stops it)")
    if num_cpus and num_cpus != cpus:
        say(f"ray: cluster.num_cpus={num_cpus} is not applied to the warm Ray ({cpus} CPUs): "
            f"`visionray down`, then `visionray up --num-cpus {num_cpus}`")


def start_warm(num_cpus: int | None = None) -> tuple[dict, bool]:
    """``visionray up``: the warm local Ray with the embedded runtime's settings (its record, and whether
    this call started it; see ``services/warm.py``)."""
    return warm.up(ray_env(local=True), tuple(free_ports(2)), num_cpus)


def _kill_new_children(before: set[int]) -> None:
    import psutil

    new = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    for child in new:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(new, timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on right now: all held open while they are
    chosen (ports asked for one at a time can repeat, and Ray refuses one port for two components)."""
    import socket
    from contextlib import ExitStack

    with ExitStack() as stack:
        held = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in held]


def quiet_worker_logs() -> None:
    """Inside a Ray Train worker: keep Ray's per-report INFO lines and the known-harmless records
    (``quiet``) out of the user's terminal; with ``visionray run -v``, nothing."""
    from pipelines.services import quiet

    if quiet.verbose():
        return
    quiet.filter_known_records()
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray") or "/ray/train/" in name or "/ray/data/" in name:
            logging.getLogger(name).setLevel(logging.WARNING)


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


class Sampler:
    """A daemon thread that calls :meth:`sample` every ``interval_s`` while its ``with`` block runs,
    and once more on exit, so the last stretch is never missed. Subclasses define :meth:`sample`."""

    thread_name = "visionray-sampler"

    def __init__(self, interval_s: float):
        import threading

        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    def sample(self) -> object:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


#: The temporary directory of the warm head this process is attached to (empty: none): its processes work
#: for this run too, so the memory and CPU samplers count them (a warm head is not this process's child).
_WARM_TEMP_DIR: list[str] = []


def _process_tree() -> list:
    """This process and every process it started (the embedded Ray cluster included), or, attached to the
    warm local Ray, that head's processes."""
    import psutil

    me = psutil.Process()
    tree = {p.pid: p for p in [me, *me.children(recursive=True)]}
    for temp_dir in _WARM_TEMP_DIR:
        tree.update({p.pid: p for p in warm.processes(temp_dir)})
    return list(tree.values())


class MemoryWatcher(Sampler):
    """Peak memory of this process and every process it started (the local Ray cluster included).

    Sums PSS (proportional set size) so pages shared between Ray workers and the object store are
    counted once; falls back to RSS where PSS is not available. Samples every ``interval_s``.
    """

    thread_name = "visionray-memory"

    def __init__(self, interval_s: float = 2.0):
        super().__init__(interval_s)
        self.peak_bytes = 0

    def sample(self) -> int:
        import psutil

        total = 0
        for p in _process_tree():
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.peak_bytes = max(self.peak_bytes, total)
        return total


class CpuMeter(Sampler):
    """CPU utilisation of this process and everything it started (the embedded Ray cluster):
    CPU seconds / (wall seconds x cores). Sampled every ``interval_s``; a process that exits
    keeps the CPU time it had at its last sample."""

    thread_name = "visionray-cpu"

    def __init__(self, interval_s: float = 1.0, cores: float | None = None):
        super().__init__(interval_s)
        self.cores = cores
        self._seen: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU seconds
        self._start: dict[tuple[int, float], float] = {}

    def __enter__(self) -> Self:
        import time

        if self.cores is None:
            try:
                import ray

                self.cores = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
            except Exception:  # noqa: BLE001 - no Ray here: the machine's cores
                self.cores = float(os.cpu_count() or 1)
        self.sample()
        self._start = dict(self._seen)
        self.started = time.perf_counter()
        self.ended: float | None = None
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        import time

        super().__exit__(*exc)
        self.ended = time.perf_counter()

    def sample(self) -> None:
        import psutil

        for p in _process_tree():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    self._seen[(p.pid, p.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def cpu_seconds(self) -> float:
        return sum(v - self._start.get(k, 0.0) for k, v in self._seen.items())

    def utilization(self) -> float:
        import time

        wall = (self.ended or time.perf_counter()) - self.started
        return self.cpu_seconds() / max(wall * (self.cores or 1), 1e-9)
