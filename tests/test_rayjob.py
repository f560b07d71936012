"""jobs/rayjob.yaml, the KubeRay RayJob example: its entrypoint is a real `factory run` of a config in this
repository with overrides that load, output on object storage, every API key the config names comes from
a Kubernetes secret on the head (the driver) and the workers (the engine actors), and the stop settings
leave a run the time it needs to stop cleanly."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from factory import config
from factory.executor.core import STOP_GRACE_S

ROOT = Path(__file__).resolve().parent.parent
JOB = yaml.safe_load((ROOT / "jobs" / "rayjob.yaml").read_text())


def containers() -> list[dict]:
    cluster = JOB["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def entrypoint() -> tuple[Path, list[str]]:
    args = shlex.split(JOB["spec"]["entrypoint"])
    assert args[:2] == ["factory", "run"], args
    checkout = JOB["metadata"]["annotations"]["factory/checkout"].rstrip("/") + "/"
    assert args[2].startswith(checkout), "the config must be in the image's checkout of this repository"
    return ROOT / args[2][len(checkout) :], args[3:]


def test_it_is_a_rayjob_whose_entrypoint_is_a_factory_run_of_a_config_here():
    assert JOB["apiVersion"] == "ray.io/v1" and JOB["kind"] == "RayJob"
    path, overrides = entrypoint()
    assert path.is_file(), path
    cfg = config.load(path, overrides)  # every override is a real key with a valid value
    assert cfg.output_dir.startswith("s3://") and cfg.prompts.path.startswith("s3://")
    assert cfg.cost.max_usd is not None  # a budget that can be reached: some stage is priced
    assert JOB["spec"]["shutdownAfterJobFinishes"] is True


def test_every_api_key_comes_from_a_kubernetes_secret_on_the_head_and_the_workers():
    from factory.graph import RunGraph

    path, overrides = entrypoint()
    cfg = config.load(path, overrides)
    names = {engine.api_key_env for _, engine in RunGraph(cfg).engines() if engine.api_key_env}
    assert names == {"DEEPSEEK_API_KEY"}
    for container in containers():
        env = {e["name"]: e for e in container["env"]}
        for name in names | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}:
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"], (
                container["name"],
                name,
            )
    runtime = yaml.safe_load(JOB["spec"]["runtimeEnvYAML"])
    assert not names & set(runtime.get("env_vars", {})), "a secret in the runtime env is stored with the job"


def test_a_stop_leaves_the_run_time_to_store_and_release_its_lease():
    runtime = yaml.safe_load(JOB["spec"]["runtimeEnvYAML"])
    wait = int(runtime["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"])
    assert wait > STOP_GRACE_S + 5
    cluster = JOB["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] >= wait
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # engines run on the workers
    # the same stop time as jobs/submit.sh's runtime env
    submit = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    assert int(submit["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) == wait
