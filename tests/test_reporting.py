"""benchmarks/reporting.py: what a rerun of a long experiment counts as finished."""

from benchmarks import reporting


def test_a_saved_run_counts_only_under_the_protocol_it_ran_under(tmp_path):
    path = tmp_path / "runs" / "a.json"
    protocol = {"steps": 10, "sizes": (64, 32), "p_bound": None}
    assert reporting.read_finished(path, protocol) is None  # not written yet
    reporting.write_json(path, {"loss": 0.5, "protocol": protocol})
    # Tuples come back as lists: the comparison goes through JSON too.
    assert reporting.read_finished(path, protocol) == {
        "loss": 0.5,
        "protocol": {"steps": 10, "sizes": [64, 32], "p_bound": None},
    }
    assert reporting.read_finished(path, {**protocol, "steps": 11}) is None
    reporting.write_json(path, {"loss": 0.5})  # written before protocols were recorded
    assert reporting.read_finished(path, protocol) is None
