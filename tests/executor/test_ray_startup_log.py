"""Ray's start-up messages (the token-auth notice on every run) go to a file in Ray's session log folder,
not among the run's progress lines; an error of Ray's start stays on stderr."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from factory.config import RayConfig
from factory.executor import ray as ray_mod

ROOT = Path(__file__).resolve().parents[2]
NOTICE = "Token authentication is enabled for this Ray cluster."
NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def test_ray_start_up_warnings_go_to_the_log_file_and_errors_stay_on_stderr(tmp_path, monkeypatch, capfd):
    if os.environ.get("FACTORY_TEST_FRESH_LOGGING") != "1":
        # Logging is process-wide and an earlier Ray start in this process changes it in ways a test cannot
        # fully undo: the check runs in a fresh interpreter, as a run's driver starts.
        name = f"{Path(__file__).resolve()}::test_ray_start_up_warnings_go_to_the_log_file_and_errors_stay_on_stderr"
        done = subprocess.run([sys.executable, "-m", "pytest", name, "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                              env={**os.environ, "FACTORY_TEST_FRESH_LOGGING": "1"}, capture_output=True,
                              text=True, timeout=180, check=False)  # fmt: skip
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
        return
    import ray

    def init(**kwargs):  # what Ray's Python side does while it starts
        logging.getLogger(NOTICE_LOGGER).warning(NOTICE)
        warnings.warn("a deprecated Ray option", DeprecationWarning, stacklevel=1)
        logging.getLogger("ray._private.worker").error("a start-up error")

    class RaysHandler(logging.Handler):  # Ray's own: writes to whatever sys.stderr is when it emits
        def emit(self, record: logging.LogRecord) -> None:
            sys.stderr.write(self.format(record) + "\n")

    ray_logger = logging.getLogger("ray")  # as `import ray` leaves it (another test's Ray may have changed it)
    monkeypatch.setattr(ray_logger, "handlers", [RaysHandler()])
    monkeypatch.setattr(ray_logger, "propagate", False)
    monkeypatch.setattr(ray_logger, "level", logging.INFO)  # an earlier ray.init(logging_level=...) sets it
    # the notice's own logger as a fresh process has it (an earlier Ray start in this process may have
    # configured it: a level, handlers, or disabled by a dictConfig)
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)  # an earlier test's logging.disable
    for depth in (2, 3, 4):  # ray._private, ray._private.authentication, ...authentication_token_setup
        between = logging.getLogger(".".join(NOTICE_LOGGER.split(".")[:depth]))
        for name, value in (("handlers", []), ("propagate", True), ("level", logging.NOTSET), ("disabled", False)):
            monkeypatch.setattr(between, name, value)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray_mod, "ray_log_dir", lambda: str(tmp_path), raising=False)
    ray_mod.init_ray(RayConfig(num_cpus=1))
    err = capfd.readouterr().err
    assert NOTICE not in err and "deprecated Ray option" not in err  # main: Ray's handler printed them
    assert "a start-up error" in err
    logged = (tmp_path / ray_mod.STARTUP_LOG).read_text()
    assert NOTICE in logged and "DeprecationWarning: a deprecated Ray option" in logged and "a start-up error" in logged
    # Ray's own handler is back: what Ray logs after its start is as before
    logging.getLogger("ray.x").warning("after the start")
    assert "after the start" in capfd.readouterr().err


def test_a_real_ray_start_prints_no_start_up_warning(tmp_path):
    script = (
        "import ray\n"
        "from factory.config import RayConfig\n"
        "from factory.executor.ray import init_ray\n"
        "init_ray(RayConfig(num_cpus=1))\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert " WARNING " not in done.stderr and NOTICE not in done.stderr, done.stderr  # main: the notice
