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


def test_two_writers_at_the_same_instant_the_later_write_wins_and_the_other_refuses(tmp_path, monkeypatch):
    """Both read no lease, both write: the one whose write was overwritten refuses, naming the winner with the
    same words as any refusal (so a user and a script see one message for one situation)."""
    import factory.rundir.lease as lease_mod
    from factory.rundir.lease import Lease, LeaseHeld
    from factory.rundir.store import RunStore

    store = RunStore(str(tmp_path / "run"))
    rival = Lease(store, "factory run rival.yaml")
    real_sleep = lease_mod.time.sleep
    # The rival's write lands while this run waits between its own write and the read-back.
    monkeypatch.setattr(lease_mod.time, "sleep", lambda s: (store.write_json(lease_mod.LEASE, rival._record()),
                                                            real_sleep(0)))  # fmt: skip
    with pytest.raises(LeaseHeld, match=r"is being written by 'factory run rival.yaml'.*same moment"):
        Lease(store, "factory run mine.yaml").acquire()
    assert store.read_json(lease_mod.LEASE)["token"] == rival.token  # the winner's lease is left alone
