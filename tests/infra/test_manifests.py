"""Every deployment file in infra/ parses, runs real visionray commands, and agrees with the others.

    .venv/bin/python -m pytest tests/infra        # seconds; nothing is deployed or built

No Docker and no Kubernetes here: the files are read as data. Commands found in them (RayJob
entrypoints, Dockerfile CMD, `visionray …` lines in comments and infra/README.md) are parsed by the
real CLI parser and their pipelines and overrides resolved by the real config loader; each
subcommand's ``--help`` is run as a user would.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IMAGE = "ghcr.io/visionray/visionray"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
COMPOSE = INFRA / "mlflow" / "compose.yaml"
KUBERAY = INFRA / "ray" / "kuberay"
LAUNCHER = INFRA / "ray" / "cluster-aws.yaml"
SHARED = "/mnt/shared"
INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "CMD", "ENTRYPOINT", "EXPOSE", "USER",
                "LABEL", "VOLUME", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ONBUILD"}


def yaml_files() -> list[Path]:
    return sorted(INFRA.rglob("*.yaml"))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kuberay(kind: str) -> list[dict]:
    return [d for p in sorted(KUBERAY.glob("*.yaml")) for d in docs(p) if d.get("kind") == kind]


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def ray_pods() -> list[dict]:
    """Every pod spec that runs Ray or submits to it: heads, worker groups, job submitters."""
    specs = []
    for c in kuberay("RayCluster"):
        specs.append(c["spec"]["headGroupSpec"]["template"]["spec"])
        specs += [g["template"]["spec"] for g in c["spec"]["workerGroupSpecs"]]
    for j in kuberay("RayJob") + [c["spec"]["jobTemplate"] for c in kuberay("RayCronJob")]:
        spec = j.get("spec", j)
        specs.append(spec["submitterPodTemplate"]["spec"])
    return specs


def entrypoints() -> list[str]:
    jobs = [j["spec"] for j in kuberay("RayJob")] + [c["spec"]["jobTemplate"] for c in kuberay("RayCronJob")]
    return [j["entrypoint"] for j in jobs]


def cli_commands() -> list[list[str]]:
    """`visionray …` commands: job entrypoints, the Dockerfile's CMD, lines in comments and the README."""
    found = []
    for e in entrypoints():
        words = shlex.split(e)
        assert words[:3] == ["python", "-m", "pipelines"], e
        found.append(words[3:])
    cmd = dict(dockerfile(DOCKERFILE))["CMD"]
    found.append(yaml.safe_load(cmd)[1:])
    readme = "\n".join(re.findall(r"```bash\n(.*?)```", (INFRA / "README.md").read_text(), re.S))
    texts = [p.read_text() for p in [*yaml_files(), DOCKERFILE]] + [readme]
    for text in texts:
        for line in text.splitlines():
            m = re.search(r"(?:^|[\s`$(])visionray ((?:run|show|submit|jobs|list|ui)\b[^#`|;)]*)", line)
            if m and "<" not in m.group(1):
                found.append(shlex.split(m.group(1)))
    return found


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses(path):
    assert docs(path), f"{path} is empty"


@pytest.mark.parametrize("path", [DOCKERFILE, INFRA / "mlflow" / "Dockerfile"], ids=lambda p: p.parent.name)
def test_every_dockerfile_parses_and_copies_what_exists(path):
    steps = dockerfile(path)
    assert all(word in INSTRUCTIONS for word, _ in steps), [w for w, _ in steps if w not in INSTRUCTIONS]
    assert next(w for w, _ in steps if w != "ARG") == "FROM"
    context = ROOT if path == DOCKERFILE else path.parent
    for word, args in steps:
        if word == "COPY" and "--from" not in args:
            for src in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert (context / src).exists(), f"{path}: COPY {src} is not in the build context"


def test_both_image_variants_are_stages_of_the_dockerfile():
    steps = dockerfile(DOCKERFILE)
    stages = {args.split()[-1] for w, args in steps if w == "FROM" and " AS " in args}
    final = [args for w, args in steps if w == "FROM"][-1]
    assert final == "base-${VARIANT}"
    assert {"base-cpu", "base-cuda"} <= stages
    header = " ".join(DOCKERFILE.read_text().split())
    for variant in ("cpu", "cuda"):
        assert f"--build-arg VARIANT={variant} -t {IMAGE}:0.1.0-{variant}" in header


def test_every_command_in_infra_is_a_real_visionray_command(capsys):
    from pipelines.config import load_config
    from pipelines.entry.cli import build_parser

    commands = cli_commands()
    assert len(commands) >= 5
    for words in commands:
        args = build_parser().parse_args(words)  # a wrong option exits 2 here
        if getattr(args, "pipeline", None):
            load_config(args.pipeline, args.overrides)  # a wrong pipeline, key or value raises here
    for sub in sorted({w[0] for w in commands}):
        done = subprocess.run([sys.executable, "-m", "pipelines", sub, "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr


def test_job_entrypoints_put_shards_and_checkpoints_on_the_shared_volume():
    for e in entrypoints():
        overrides = dict(w.split("=", 1) for w in shlex.split(e) if "=" in w)
        assert overrides["data.cache_dir"].startswith(SHARED) and overrides["cluster.storage_path"].startswith(SHARED)
    for spec in ray_pods()[:-len(entrypoints())]:  # the Ray pods, not the submitters
        assert any(m["mountPath"] == SHARED for m in spec["containers"][0]["volumeMounts"])
    assert f"-v {SHARED}:{SHARED}" in docs(LAUNCHER)[0]["docker"]["run_options"]


def test_images_agree_across_files():
    import ray

    version = re.search(r"ARG RAY_VERSION=(\S+)", DOCKERFILE.read_text()).group(1)
    assert version == ray.__version__
    for cluster in kuberay("RayCluster"):
        assert cluster["spec"]["rayVersion"] == version
    for spec in ray_pods():
        container = spec["containers"][0]
        gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
        assert container["image"] == f"{IMAGE}:0.1.0-{'cuda' if gpu else 'cpu'}", container["name"]
    launcher = docs(LAUNCHER)[0]["docker"]
    assert launcher["image"] == f"{IMAGE}:0.1.0-cpu" and launcher["worker_image"] == f"{IMAGE}:0.1.0-cuda"


def test_ports_agree_across_files():
    head = kuberay("RayCluster")[0]["spec"]["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265 and ports["gcs-server"] == 6379
    start = " ".join(docs(LAUNCHER)[0]["head_start_ray_commands"])
    assert "--dashboard-port=8265" in start and "--port=6379" in start
    mlflow = docs(COMPOSE)[0]["services"]["mlflow"]
    assert "--port=5000" in mlflow["command"]
    assert mlflow["ports"] == ["${MLFLOW_BIND:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000"]  # loopback by default
    assert "EXPOSE 5000" in (INFRA / "mlflow" / "Dockerfile").read_text()
    service = next(d for d in docs(KUBERAY / "shared-storage.yaml") if d["kind"] == "Service")
    uri = _env(ray_pods()[0])["MLFLOW_TRACKING_URI"]["value"]
    assert uri == f"http://{service['metadata']['name']}.visionray.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    assert service["spec"]["ports"][0]["port"] == 5000


def test_environment_agrees_across_files():
    uri = None
    for spec in ray_pods():
        env = _env(spec)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "visionray-ray-token", "key": "token"}
        if "MLFLOW_TRACKING_URI" in env:
            uri = uri or env["MLFLOW_TRACKING_URI"]["value"]
            assert env["MLFLOW_TRACKING_URI"]["value"] == uri
    assert "--env RAY_AUTH_MODE=token" in docs(LAUNCHER)[0]["docker"]["run_options"]
    # The MLflow server answers the Host header the Ray pods send.
    example = dict(line.split("=", 1) for line in (INFRA / "mlflow" / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert uri.split("//")[1].split(":")[0] in example["MLFLOW_ALLOWED_HOSTS"].split(",")
    # Every variable compose reads is in the example .env.
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= set(example), used - set(example)
    # The variables the manifests set are the ones the code reads.
    code = "".join(p.read_text() for p in [*ROOT.glob("pipelines/**/*.py"), *ROOT.glob("components/**/*.py")])
    for name in ("MLFLOW_TRACKING_URI", "VISIONRAY_DATA"):
        assert name in code, name


def test_the_mlflow_server_is_authenticated_and_proxies_artifacts():
    services = docs(COMPOSE)[0]["services"]
    command = services["mlflow"]["command"]
    assert "--app-name=basic-auth" in command and "--serve-artifacts" in command
    assert any(c.startswith("--backend-store-uri=postgresql://") for c in command)
    # No password on the command line (`ps`, `docker inspect`): libpq reads PGPASSWORD.
    assert not any("PASSWORD" in c or ":${" in c for c in command), command
    assert services["mlflow"]["environment"]["PGPASSWORD"] == "${POSTGRES_PASSWORD}"
    assert any(c.startswith("--artifacts-destination=s3://") for c in command)
    assert [name for name, s in services.items() if "ports" in s] == ["mlflow"]  # nothing else published


def _env(spec: dict) -> dict[str, dict]:
    return {e["name"]: e for e in spec["containers"][0]["env"]}
