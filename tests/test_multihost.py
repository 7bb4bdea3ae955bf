"""Fromage across real JAX processes on one machine (`benchmarks/multihost.py`).

Each launch starts 2 or 4 worker processes with 2 CPU devices each; they join one JAX
runtime over 127.0.0.1 (a free port per launch) and run real cross-process collectives
(gloo). The single-process reference runs here, on this process's one CPU device.

Launches: 2 processes (data=4; jit and shard_map steps; checkpoint after step 3), 2 fresh
processes restoring that checkpoint, 4 processes (data=4 x model=2), and three that must
fail fast: a worker killed under the launcher, a worker killed with no launcher (JAX's
heartbeat ends the other), and workers told a wrong `num_processes`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import multihost

ROOT = Path(__file__).resolve().parents[1]
# p_bound below 1: every tensor starts above its cap, so the bound binds from the first step.
P_BOUND = 0.95
QUICK = ["--preset", "quick", "--steps", "6", "--p-bound", str(P_BOUND)]
STEPS = 6
SAVED_AT = 3
# Per step, every value is rounded after sums (norms, the batch sum of gradients, matmul
# contractions) that are split and ordered differently across devices and processes; a
# sum of n terms taken in another (tree) order differs by about log2(n) ulps. The largest
# sums here have 64 x 64 = 4096 terms (one stacked layer's norm), so allow log2(4096) = 12
# ulps of each tensor's largest entry per step, for ‖W₀‖ (computed once) 12 ulps.
ULPS_PER_STEP = 12
# FromageState.initial_norms is an InitialNorms; its vector is the leaf `values`.
INITIAL_NORMS_KEY = "['opt_state'].initial_norms.values"
LAUNCH_TIMEOUT = 120.0
FAILURE_TIMEOUT = 60.0


def environment() -> dict[str, str]:
    """The workers import this checkout's `benchmarks` and `fromage_optax`."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")


class Workers:
    """Started processes whose merged output a thread collects line by line."""

    def __init__(self, commands: list[list[str]], extra_environment: dict | None = None):
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.processes = [
            subprocess.Popen(
                command,
                cwd=ROOT,
                env={**environment(), **(extra_environment or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # so a timeout can kill the whole group
            )
            for command in commands
        ]
        for process in self.processes:
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process):
        for line in process.stdout:
            self.lines.put(line)

    def text(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.text()[-4000:]}")

    def wait(self, timeout: float) -> list[int]:
        """Exit codes; on timeout every process group is killed and the test fails."""
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(max(0.0, deadline - time.monotonic())) for p in self.processes]
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s (a hang):\n{self.text()[-4000:]}")

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def module_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.multihost", *arguments]


def run_launcher(*arguments: str) -> str:
    workers = Workers([module_command(*arguments)])
    codes = workers.wait(LAUNCH_TIMEOUT)
    assert codes == [0], workers.text()[-4000:]
    return workers.text()


def load_final(directory: Path, mode: str) -> dict[str, np.ndarray]:
    with np.load(directory / f"final_{mode}.npz") as file:
        return {key: file[key] for key in file.files}


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same training in this process, on one device: the final params and state."""
    out = tmp_path_factory.mktemp("one_process")
    config = multihost.parse_args([*QUICK, "--modes", "jit", "--out", str(out)])
    _, finals = multihost.run(config)
    return finals["jit"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    run_launcher("--launch", "2", *QUICK, "--save-at", str(SAVED_AT), "--out", str(out))
    return out


@pytest.fixture(scope="module")
def restored(tmp_path_factory, two_processes):
    """Two fresh processes continue from the checkpoint the first two wrote after step 3."""
    out = tmp_path_factory.mktemp("restored")
    checkpoint = str(two_processes / "checkpoint")
    run_launcher(
        "--launch", "2", *QUICK, "--modes", "jit", "--restore", checkpoint, "--out", str(out)
    )
    return out


@pytest.fixture(scope="module")
def four_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("four_processes")
    run_launcher("--launch", "4", "--model-parallel", "2", *QUICK, "--out", str(out))
    return out


def largest_differences_in_ulps(final: dict, reference: dict) -> dict[str, float]:
    """Per leaf, max |final - reference| in ulps of the reference leaf's largest entry."""
    assert sorted(final) == sorted(reference)
    differences = {}
    for key, expected in reference.items():
        assert final[key].shape == expected.shape and final[key].dtype == expected.dtype, key
        ulp = np.spacing(np.max(np.abs(expected)).astype(expected.dtype))
        difference = np.max(np.abs(final[key].astype(np.float64) - expected))
        differences[key] = float(difference / ulp)
    return differences


@pytest.mark.parametrize("processes", ["two_processes", "four_processes"])
@pytest.mark.parametrize("mode", ["jit", "shard_map"])
def test_processes_give_the_one_process_step(request, processes, mode, reference):
    """(a) the jitted step on arrays sharded across processes; (b) the optimiser update in
    shard_map with axis_name over mesh axes that span processes."""
    final = load_final(request.getfixturevalue(processes), mode)
    ulps = largest_differences_in_ulps(final, reference)
    print(f"{processes} {mode}: largest difference in ulps {ulps}")
    assert ulps.pop("['opt_state'].count") == 0
    assert ulps.pop(INITIAL_NORMS_KEY) <= ULPS_PER_STEP
    assert max(ulps.values()) <= ULPS_PER_STEP * STEPS


def test_the_bound_binds(reference):
    """The control: with p_bound inactive the comparisons above would skip its branch.

    The warmup's learning rate is 0 at step 0, so that step leaves every norm at ‖W₀‖ and
    only the cap (p_bound < 1) can move it; after it, every norm stays at or below p·‖W₀‖
    (with p_bound 2, which never binds here, they end at 0.956 to 0.997 of ‖W₀‖).
    """
    norms = []
    for key, leaf in reference.items():
        if key.startswith("['params']"):
            per_layer = leaf.reshape(leaf.shape[0], -1) if "blocks" in key else leaf.reshape(1, -1)
            norms.extend(np.linalg.norm(per_layer.astype(np.float64), axis=1))
    ratios = np.array(norms) / reference[INITIAL_NORMS_KEY]
    assert np.all(ratios <= P_BOUND * (1 + 1e-6)), ratios


def test_meshes_span_the_processes(two_processes, four_processes):
    two = json.loads((two_processes / "multihost.json").read_text())
    four = json.loads((four_processes / "multihost.json").read_text())
    assert (two["processes"], two["devices"], two["mesh"]) == (2, 4, {"data": 4, "model": 1})
    assert (four["processes"], four["devices"], four["mesh"]) == (4, 8, {"data": 4, "model": 2})


def test_restored_processes_continue_bitwise(two_processes, restored):
    """(c) saved by 2 processes after step 3, restored by 2 new ones: steps 4-6 are the same."""
    uninterrupted, resumed = load_final(two_processes, "jit"), load_final(restored, "jit")
    assert sorted(resumed) == sorted(uninterrupted)
    for key, expected in uninterrupted.items():
        assert resumed[key].dtype == expected.dtype and resumed[key].tobytes() == expected.tobytes()
    summary = json.loads((restored / "multihost.json").read_text())
    original = json.loads((two_processes / "multihost.json").read_text())
    assert summary["first_step"] == SAVED_AT
    assert summary["modes"]["jit"]["loss"] == original["modes"]["jit"]["loss"][SAVED_AT:]


def endless_worker_arguments(out: Path) -> list[str]:
    return [*QUICK, "--steps", "1000000", "--modes", "jit", "--out", str(out)]


def worker_commands(out: Path, num_processes: int, started: int, *extra: str) -> list[list[str]]:
    """`started` workers (no launcher) that expect `num_processes` in all."""
    coordinator = f"127.0.0.1:{multihost.free_port()}"
    common = [*endless_worker_arguments(out), "--coordinator", coordinator]
    common += ["--num-processes", str(num_processes), *extra]
    return [module_command(*common, "--process-id", str(i)) for i in range(started)]


TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_a_killed_worker_stops_the_launch(tmp_path):
    """(d) SIGKILL one of 2 training workers: the launcher stops the other and fails."""
    workers = Workers([module_command("--launch", "2", *endless_worker_arguments(tmp_path))])
    workers.wait_for(r"process 1 pid \d+", 30)
    pids = [int(pid) for pid in re.findall(r"launcher: process \d+ pid (\d+)", workers.text())]
    workers.wait_for(r"process 1 of 2: .*training", 60)
    killed_at = time.monotonic()
    os.kill(pids[1], signal.SIGKILL)
    codes = workers.wait(FAILURE_TIMEOUT)
    seconds = time.monotonic() - killed_at
    print(f"launcher ended {seconds:.1f} s after the kill")
    assert codes == [1]
    assert "launcher: process 1 of 2 failed (killed by SIGKILL)" in workers.text()
    assert not [pid for pid in pids if is_running(pid)]
    assert seconds < 5


def test_a_killed_worker_ends_the_others_without_a_launcher(tmp_path):
    """(d) as on separate hosts: JAX's heartbeat (3 s here) ends the surviving worker."""
    workers = Workers(worker_commands(tmp_path, 2, 2, "--heartbeat-timeout", "3"), TWO_DEVICES)
    workers.wait_for(r"process 1 of 2: .*training", 60)
    killed_at = time.monotonic()
    workers.processes[1].kill()
    codes = workers.wait(FAILURE_TIMEOUT)
    seconds = time.monotonic() - killed_at
    error = re.search(
        r".*(stopped sending heartbeats|Gloo .* failed|Connection closed).*", workers.text()
    )
    print(f"worker 0 ended {seconds:.1f} s after the kill: {error and error.group(0)}")
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL
    assert error, workers.text()[-4000:]
    assert seconds < 30


def test_a_wrong_num_processes_fails_within_the_initialization_timeout(tmp_path):
    """(d) 2 workers told to expect 3: both give up after --initialization-timeout 3."""
    commands = worker_commands(tmp_path, 3, 2, "--initialization-timeout", "3")
    started_at = time.monotonic()
    workers = Workers(commands, TWO_DEVICES)
    codes = workers.wait(FAILURE_TIMEOUT)
    print(f"workers ended {time.monotonic() - started_at:.1f} s after the start")
    assert all(code != 0 for code in codes), codes
    assert "joining 3 processes" in workers.text()
    # Each worker ends on JAX's deadline or, should the join hang, on the watchdog.
    ending = r"DEADLINE_EXCEEDED: Deadline Exceeded|Timeout \(0:00:23\)!"
    endings = re.findall(ending, workers.text())
    assert len(endings) == 2, workers.text()[-4000:]


def test_a_hanging_join_is_ended_by_the_watchdog():
    """A join that neither completes nor fails ends INITIALIZATION_GRACE after the timeout."""
    script = (
        "import time\n"
        "from benchmarks import multihost\n"
        "multihost.INITIALIZATION_GRACE = 1.0\n"
        "multihost.jax.distributed.initialize = lambda **kwargs: time.sleep(120)\n"
        "multihost.initialize_distributed(dict(process_id=0, num_processes=2,\n"
        "    coordinator='127.0.0.1:1', initialization_timeout=1, heartbeat_timeout=3))\n"
    )
    started_at = time.monotonic()
    workers = Workers([[sys.executable, "-c", script]])
    codes = workers.wait(FAILURE_TIMEOUT)
    seconds = time.monotonic() - started_at
    print(f"ended {seconds:.1f} s after the start")
    assert codes == [1], workers.text()
    assert "a join still hanging after 2 s ends this process" in workers.text()
    assert "Timeout (0:00:02)!" in workers.text()
    assert "in initialize_distributed" in workers.text()
    assert seconds < 30
