"""`factory doctor`: an unreadable part is named, then quarantined, and only its keys are asked again."""

import polars as pl
import pytest

from tests.test_run import local_run, synthetic_cfg


def test_a_corrupt_part_is_named_then_quarantined_and_only_its_keys_are_asked_again(tmp_path, capsys):
    from factory.cli import main
    from factory.rundir.store import RunStore
    from tests.fakes import FakeEngine

    cfg = synthetic_cfg(tmp_path, 4)
    local_run(cfg)
    store = RunStore(cfg.output_dir)
    (part,) = store.parts("samples")
    lost = store.read("samples").filter(pl.col("prompt_id") == "p3")
    # Keep all but p3's samples in a good part; the "corrupt" part holds p3's: garbage bytes.
    good = store.read("samples").filter(pl.col("prompt_id") != "p3")
    store.fs.rm(part)
    store.append("samples", good)
    store.append("samples", lost)
    bad = max(store.parts("samples"))  # the later part: p3's
    store.fs.pipe_file(bad, b"PAR1 this is not a parquet footer")
    with pytest.raises(Exception, match=r"samples/part-.*\.parquet: not a readable Parquet part.*factory doctor"):
        local_run(cfg)
    assert main(["doctor", cfg.output_dir]) == 1
    out = capsys.readouterr().out
    assert "1 part(s) quarantined" in out and "_quarantine" in out
    assert (tmp_path / "run" / "_quarantine" / "samples" / (bad.rsplit("/", 1)[-1] + ".json")).is_file()
    engine = FakeEngine()
    manifest = local_run(cfg, engine)
    asked = sorted(r.tag for r in engine.requests if r.json_schema is None)
    assert asked == [("p3", 0), ("p3", 1)] and manifest["requests"] == {"sampler": 2, "judge": 2}
    # The new p3 samples are judged again: a judgment of the lost rows never stands for the new ones.
    assert main(["doctor", cfg.output_dir]) == 0
