"""The run directory's lease: one writer at a time; a dead writer's lease is taken over (a `factory run` on the
in-process executor with the fake engine)."""

import socket

import pytest

from tests.test_run import local_run, synthetic_cfg


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_ones_lease_is_taken_over(tmp_path, capsys):
    from factory.rundir.lease import Lease, LeaseHeld
    from factory.rundir.store import RunStore

    cfg = synthetic_cfg(tmp_path)
    store = RunStore(cfg.output_dir)
    with Lease(store, "factory run other.yaml"):
        with pytest.raises(LeaseHeld, match=r"being written by 'factory run other.yaml' .*\(pid \d+.*--take-over"):
            local_run(cfg)
        assert store.read("samples") is None  # refused before any request
    # A lease whose pid is gone on this host is stale: taken over, with a line saying so.
    store.write_json("_lease.json", {"owner": "x", "host": socket.gethostname(), "pid": 2**22 + 7,
                                     "command": "factory run crashed.yaml", "started_at": 0, "heartbeat_at": 9e18,
                                     "token": "dead"})  # fmt: skip
    manifest = local_run(cfg)
    assert manifest["counts"]["samples_ok"] == 8
    assert "taking over the stale lease of 'factory run crashed.yaml'" in capsys.readouterr().err
    assert not store.exists("_lease.json")  # released at the end
