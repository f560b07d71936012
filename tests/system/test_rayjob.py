"""The KubeRay RayJob examples (jobs/rayjob.yaml on GPUs with vLLM, jobs/rayjob_api.yaml with an API) and the
Dockerfile that builds their image: each entrypoint is a real `factory run` of a config in this repository
with overrides that load, output on object storage, every API key the config names comes from a Kubernetes
secret on the head (the driver) and the workers (the engine actors), the stop settings leave a run the time
it needs to stop cleanly; every container runs the Dockerfile's image, of the Ray the RayJob names, with the
checkout the entrypoint reads; the GPU workers hold what the config's pools reserve."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from factory import config
from factory.engines import engine_identity, kind_of
from factory.executor.core import STOP_GRACE_S

ROOT = Path(__file__).resolve().parents[2]
JOBS = {name: yaml.safe_load((ROOT / "jobs" / name).read_text()) for name in ("rayjob.yaml", "rayjob_api.yaml")}
JOB = JOBS["rayjob.yaml"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The API keys each job's config names (the GPU job's engines are in process: none).
API_KEYS = {"rayjob.yaml": set(), "rayjob_api.yaml": {"DEEPSEEK_API_KEY"}}
each_job = pytest.mark.parametrize("name", list(JOBS))


def groups(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def containers(job: dict = JOB) -> list[dict]:
    return [c for g in groups(job) for c in g["template"]["spec"]["containers"]]


def entrypoint(job: dict = JOB) -> tuple[Path, list[str]]:
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["factory", "run"], args
    checkout = job["metadata"]["annotations"]["factory/checkout"].rstrip("/") + "/"
    assert args[2].startswith(checkout), "the config must be in the image's checkout of this repository"
    return ROOT / args[2][len(checkout) :], args[3:]


def job_config(job: dict = JOB) -> config.RunConfig:
    path, overrides = entrypoint(job)
    return config.load(path, overrides)


def gpus(container: dict) -> int:
    return int(container["resources"]["limits"].get("nvidia.com/gpu", 0))


@each_job
def test_it_is_a_rayjob_whose_entrypoint_is_a_factory_run_of_a_config_here(name):
    job = JOBS[name]
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    path, _ = entrypoint(job)
    assert path.is_file(), path
    cfg = job_config(job)  # every override is a real key with a valid value
    assert cfg.output_dir.startswith("s3://") and cfg.prompts.path.startswith("s3://")
    from factory.graph import RunGraph

    if any(kind_of(engine).billed_per_token for _, engine in RunGraph(cfg).engines()):
        assert cfg.cost.max_usd is not None  # a budget that can be reached: some stage is priced
    assert job["spec"]["shutdownAfterJobFinishes"] is True


@each_job
def test_every_api_key_comes_from_a_kubernetes_secret_on_the_head_and_the_workers(name):
    from factory.graph import RunGraph

    job = JOBS[name]
    cfg = job_config(job)
    names = {engine.api_key_env for _, engine in RunGraph(cfg).engines() if engine.api_key_env}
    assert names == API_KEYS[name]
    for container in containers(job):
        env = {e["name"]: e for e in container["env"]}
        for key in names | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}:
            assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["name"], (
                container["name"],
                key,
            )
    runtime = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert not names & set(runtime.get("env_vars", {})), "a secret in the runtime env is stored with the job"


@each_job
def test_a_stop_leaves_the_run_time_to_store_and_release_its_lease(name):
    job = JOBS[name]
    runtime = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    wait = int(runtime["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"])
    assert wait > STOP_GRACE_S + 5
    for group in groups(job):
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] >= wait
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # engines: workers
    # the same stop time as jobs/submit.sh's runtime env
    submit = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    assert int(submit["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) == wait


# -- the image: the Dockerfile and the jobs agree -------------------------------------------------------
def dockerfile_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    return value


@each_job
def test_every_container_runs_the_dockerfiles_image_of_the_jobs_ray(name):
    job = JOBS[name]
    version = PYPROJECT["project"]["version"]
    images = {c["image"] for c in containers(job)}
    assert len(images) == 1, images  # head and workers: one image, one Ray, one factory
    (image,) = images
    assert image.rsplit("/", 1)[-1] == f"factory:{version}", image  # the tag the Dockerfile's header builds
    assert f"docker build -t REGISTRY/factory:{version} ." in DOCKERFILE
    ray = job["spec"]["rayClusterSpec"]["rayVersion"]
    assert dockerfile_arg("RAY_VERSION") == ray
    (base,) = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert base == "rayproject/ray:${RAY_VERSION}-py311-gpu"  # Ray's own image, with CUDA for vLLM
    assert '"ray[default]==${RAY_VERSION}"' in DOCKERFILE  # pip may not move the image's Ray


def test_the_dockerfile_installs_the_project_with_its_vllm_extra_where_the_entrypoint_reads_it():
    checkout = JOB["metadata"]["annotations"]["factory/checkout"]
    assert all(j["metadata"]["annotations"]["factory/checkout"] == checkout for j in JOBS.values())
    assert re.search(rf"^WORKDIR {re.escape(checkout)}$", DOCKERFILE, re.M)
    (install,) = re.findall(r"^RUN pip install --no-cache-dir \"\.\[([a-z0-9,]+)\]\"", DOCKERFILE, re.M)
    extras = set(install.split(","))
    assert {"vllm", "s3"} <= extras <= set(PYPROJECT["project"]["optional-dependencies"])
    copied = set(re.findall(r"^COPY --chown=\S+ (\S+) \./\S*$", DOCKERFILE, re.M))
    copied |= {p for line in re.findall(r"^COPY --chown=\S+ (.+) \./$", DOCKERFILE, re.M) for p in line.split()}
    for job in JOBS.values():  # the entrypoint's config, and every file it names, are in the image
        path, _ = entrypoint(job)
        assert path.relative_to(ROOT).parts[0] in copied, (path, copied)
    assert {"factory", "pyproject.toml", "README.md"} <= copied  # what `pip install .` builds from
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"factory", "conf", "jobs", "pyproject.toml", "README.md"} & set(ignored)


def test_the_gpu_workers_hold_what_the_configs_pools_reserve():
    from factory.graph import RunGraph

    cfg = job_config()
    cluster = JOB["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert gpus(head) == 0
    (group,) = [g for g in cluster["workerGroupSpecs"] if any(gpus(c) for c in g["template"]["spec"]["containers"])]
    (worker,) = group["template"]["spec"]["containers"]
    pod_gpus, pod_cpus = gpus(worker), float(worker["resources"]["limits"]["cpu"])
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"]
    pools = {engine_identity(engine): engine for _, engine in RunGraph(cfg).engines()}
    assert any(kind_of(e).resources(e).gpus for e in pools.values()), "the GPU job's config uses no GPU"
    for engine in pools.values():
        one = kind_of(engine).resources(engine)
        assert one.gpus <= pod_gpus  # a replica (its TP x PP bundles, STRICT_PACK) fits one pod
        assert engine.cpus_per_replica <= pod_cpus
        # the pool's replicas at once fit the group's largest size (pools take turns when they cannot share)
        assert engine.replicas * one.gpus <= pod_gpus * group["maxReplicas"], engine.model
        assert engine.replicas * engine.cpus_per_replica <= pod_cpus * group["maxReplicas"]
        mounts = [m["mountPath"].rstrip("/") + "/" for m in worker.get("volumeMounts", [])]
        assert any(engine.model.startswith(m) for m in mounts), f"{engine.model} is on no volume of the GPU workers"
