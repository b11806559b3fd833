"""End-to-end sweeps on a real Ray: the quick grid, ASHA, Optuna, kill -9 and resume, a killed worker,
--stop-when-solved, a diverging trial, and every bad flag. Trials are tiny (few digits, few steps) and skip the
length-generalisation probes (seconds each; the session's quick sweep and the pack test keep them) to keep this file short.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, free_ports, sweep_env
from tune_adder import spaces
from tune_adder.metrics import HISTORY_COLUMNS, TRIAL_COLUMNS
from tune_adder.sweep import main
from tune_adder.testhooks import NO_PROBES

TINY = ["--eval-size", "100", "--status-every", "5"]  # small held-out sets: evaluations cost little


def hook_env(env: dict[str, str | None] | None, probes: bool) -> dict[str, str]:
    """sweep_env() with `env` on top (None: unset it); trials skip their probes unless `probes`."""
    env = {**sweep_env(), **({} if probes else {NO_PROBES: "1"}), **(env or {})}
    return {k: v for k, v in env.items() if v is not None}


def sweep(
    args: list[str], storage: Path, address: str | None, timeout: float = 600, env: dict[str, str | None] | None = None,
    probes: bool = False,
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tune_adder.sweep", *TINY, *args, "--storage", str(storage)]  # args may override TINY
    cmd += ["--address", address] if address else []
    return subprocess.run(cmd, env=hook_env(env, probes), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start_sweep(args: list[str], storage: Path, address: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tune_adder.sweep", *TINY, *args, "--storage", str(storage), "--address", address]
    return subprocess.Popen(cmd, env=hook_env(env, False), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`python -m tune_adder.sweep ARGV` in this process, for commands refused before Ray is joined: (code, out, err)."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def only_experiment(storage: Path) -> Path:
    (exp,) = [p for p in storage.iterdir() if p.is_dir()]
    return exp


def frames(exp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    history, trials = pd.read_parquet(exp / "history.parquet"), pd.read_parquet(exp / "trials.parquet")
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert list(trials.columns) == list(TRIAL_COLUMNS)
    assert not history.duplicated(["trial_id", "step"]).any()
    return history, trials


def raw_reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def assert_probe_ladders(trials: pd.DataFrame) -> None:
    """Every trial's probes as the ladder records them: each kind's first rung measured, a higher rung measured
    exactly when the rung below it passed (NaN above the first failure), exact matches in [0, 1], and
    generalises_to and generalises_beyond_trained set."""
    from tune_adder import generalisation
    from tune_adder.metrics import PROBE_KINDS, PROBE_LADDER, probe_column

    for row in trials.to_dict("records"):
        for kind in PROBE_KINDS:
            below_passed = True
            for n in PROBE_LADDER:
                value = row[probe_column(kind, n)]
                assert pd.notna(value) == below_passed and (not below_passed or 0 <= value <= 1), (row["trial_id"], kind, n, value)
                below_passed = below_passed and generalisation.passes(value)
        assert pd.notna(row["generalises_to"]) and pd.notna(row["generalises_beyond_trained"]), row["trial_id"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_full_histories(history: pd.DataFrame, eval_every: int, max_steps: int) -> None:
    expected = list(range(eval_every, max_steps + 1, eval_every))
    for trial_id, steps in history.groupby("trial_id")["step"]:
        assert sorted(steps) == expected, trial_id


def held_at(proc: subprocess.Popen, storage: Path, gate: Path, step: int, what: str, n: int = 2):
    """Wait until `n` trials are held at `step` (their {folder: pid}), or until the sweep ended (True)."""
    return wait_for(lambda: proc.poll() is not None or len(blocked_trials(storage, gate, step)) == n and
                    blocked_trials(storage, gate, step), 300, what)  # fmt: skip


def release_and_end(proc: subprocess.Popen, gate: Path) -> None:
    """A held sweep's cleanup: let every held trial go, and end the sweep if it still runs."""
    (gate / "release").touch()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def blocked_trials(storage: Path, gate: Path, step: int) -> dict[Path, int]:
    """{trial folder: pid} of the trials the BLOCK_AT hook holds at `step` whose report there the driver has recorded."""
    pids = set()
    for marker in gate.glob("*.blocked"):
        try:
            pids.add(int(marker.read_text()))
        except (FileNotFoundError, ValueError):  # released (and removed) just now
            pass
    found = {}
    for trial_dir in storage.glob("*/train_*"):
        reports = raw_reports(trial_dir)
        if reports and reports[-1]["pid"] in pids and reports[-1]["step"] == step:
            found[trial_dir] = reports[-1]["pid"]
    return found


def test_quick_grid_end_to_end_on_embedded_ray(quick_sweep):
    """The README command (shrunk), on the embedded local Ray as a user gets it (Ray's token auth on, in a fresh
    home); a rerun prints the summary and runs nothing."""
    out, home, exp = quick_sweep["out"], quick_sweep["home"], quick_sweep["experiment"]
    assert out.returncode == 0, out.stderr[-3000:]
    token = home / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)  # the owner's only
    assert "best configs by val_exact_match" in out.stdout and "plot_convergence.py" in out.stdout
    assert "RAY_AUTH_MODE=disabled" not in out.stdout + out.stderr, out.stderr[:2000]  # Ray's opt-out advice: not ours
    assert [p.name for p in quick_sweep["storage"].iterdir()] == [exp.name] == ["quick-fifo-seeds2-steps60"]
    history, trials = frames(exp)
    configs = spaces.get_grid("quick").configs
    n = 2 * len(configs)
    assert len(trials) == n and set(trials["stop_reason"]) == {"completed"} and set(trials["status"]) == {"TERMINATED"}
    assert len(history) == 3 * n
    assert_full_histories(history, 20, 60)
    assert sorted((c["digits"], c["cell"], c["lr"], seed) for c in configs for seed in (0, 1)) == sorted(
        trials[["digits", "cell", "lr", "seed"]].itertuples(index=False, name=None)
    )
    assert (trials["steps_trained"] == 60).all() and trials["wall_time_s"].gt(0).all()
    # Every finished trial carries its length-generalisation probes (at 60 steps none generalise).
    assert_probe_ladders(trials)
    assert trials["generalises_to"].tolist() == trials["digits"].tolist()
    settings = json.loads((exp / "experiment.json").read_text())
    assert settings["status"] == "completed" and settings["grid"] == "quick" and settings["max_steps"] == 60
    assert settings["num_trials"] == n and settings["end_time"] and settings["wall_time_s"] > 0
    # Rerunning the finished experiment only prints its summary.
    stamp = (exp / "trials.parquet").stat().st_mtime_ns
    again = subprocess.run(quick_sweep["cmd"], env=quick_sweep["env"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already complete" in again.stdout and "best configs" in again.stdout
    assert (exp / "trials.parquet").stat().st_mtime_ns == stamp


# What README "Network" says a laptop user's sweep opens: Ray's own services, nothing of ours, no dashboard.
RAY_LISTENERS = {"gcs_server", "raylet", "ray::RuntimeEnv", "ray::ImplicitFu", "ray::IDLE", "ray::DashboardAg"}


def test_a_rerun_applies_its_own_max_failures_quiet_and_status_every_not_the_first_runs(quick_sweep, tmp_path):
    """Tune restores the first run's RunConfig from its tuner.pkl, failure settings and callbacks included; a rerun's
    --max-failures, --quiet and --status-every (flags a rerun may change, README) must be the ones that apply.
    Checked on a copy of the shared quick sweep's real Tune folder (its run: --max-failures 2, status every 5 s)."""
    import shutil

    from tests.conftest import QUICK_SWEEP
    from tune_adder import runner
    from tune_adder.storage import Storage
    from tune_adder.sweep import parse_settings

    storage = tmp_path / "results"
    shutil.copytree(quick_sweep["experiment"], storage / quick_sweep["experiment"].name)
    for flags, failures, quiet, every in ((["--max-failures", "5", "--quiet", "--status-every", "0.5"], 5, True, 0.5),
                                          ([], 2, False, 5)):  # fmt: skip
        s = parse_settings([*QUICK_SWEEP, "--storage", str(storage), *flags])
        run_config = runner._restore_tuner(s, Storage.from_arg(str(storage)))._local_tuner.get_run_config()
        kinds = {type(c).__name__: c for c in run_config.callbacks}
        assert run_config.failure_config.max_failures == failures and kinds["FailureLines"].max_failures == failures, flags
        assert ("StatusLine" in kinds) is not quiet and kinds["LiveFrames"].every == every, (flags, kinds)


def test_the_embedded_ray_listens_only_as_the_readme_says_and_its_gcs_wants_the_token(quick_sweep):
    """Item 7 of the hardening issue, checked with `ss -ltnp` while the quick sweep's trials are held at step 20:
    Ray 2.60 cannot bind its ports to loopback (README), so what must hold is that only Ray's own processes listen,
    the dashboard is off, and the GCS refuses a client without the token or with a wrong one."""
    network = quick_sweep["network"]
    assert network["held"], "the hold hook never fired: nothing was checked while the trials ran"
    if "listeners" not in network:
        pytest.skip("no `ss` on this machine (Linux iproute2)")
    listening = network["listeners"]
    assert any("gcs_server" in names for _, names in listening) and any("raylet" in names for _, names in listening)
    driver = network["driver_pid"]
    driver_sockets = [address for address, owners in network["owners"] if any(pid == driver for _, pid in owners)]
    assert len(driver_sockets) <= 1, ("the driver listens on more than its Ray core worker", driver_sockets)
    for address, owners in network["owners"]:
        others = {name for name, pid in owners if pid != driver}  # any other plain python process (a dashboard) fails
        assert others <= RAY_LISTENERS, (address, owners)
    # the dashboard on any port: asked while the trials were held, nothing but Ray's two agents (whose HTTP ports the
    # README names) answered HTTP
    agents = {address for address, names in listening if set(names) & {"ray::RuntimeEnv", "ray::DashboardAg"}}
    assert set(network["http"]) <= agents, f"an HTTP server (the dashboard?) listens at {set(network['http']) - agents}"
    answers = network["gcs_answers"]
    assert answers["right"] == "answered", answers
    for client in ("none", "wrong"):
        assert answers[client].startswith("refused") and "Auth" in answers[client], answers


def test_asha_stops_some_trials(tmp_path, ray_address):
    args = ["--grid", "quick", "--scheduler", "asha", "--max-steps", "80", "--eval-every", "10",
            "--grace-period", "10", "--reduction-factor", "3"]  # fmt: skip
    out = sweep(args, tmp_path, ray_address)
    assert out.returncode == 0, out.stderr[-3000:]
    history, trials = frames(only_experiment(tmp_path))
    cut = trials[trials["stop_reason"] == "early_stopped"]
    assert len(cut) >= 1 and (cut["steps_trained"] < 80).all()
    assert (trials["stop_reason"] == "completed").sum() >= 1
    assert history.groupby("trial_id")["step"].max().to_dict() == trials.set_index("trial_id")["steps_trained"].to_dict()


BAD_FLAGS = [
    (["--grid", "huge"], "full, seed, quick"),
    (["--search", "random"], "grid, optuna"),
    (["--scheduler", "hyperband"], "fifo, asha"),
    (["--seeds", "0"], "--seeds"),
    (["--search", "optuna", "--num-samples", "0"], "--num-samples"),
    (["--max-steps", "0"], "--max-steps"),
    (["--cpus-per-trial", "0.5"], "--cpus-per-trial"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["--reduction-factor", "1"], "--reduction-factor"),
    (["--seeds", "two"], "--seeds"),
    (["--frobnicate"], "unrecognized"),
    (["--search", "optuna", "--grid", "quick"], "--grid"),
    (["--num-samples", "5"], "--num-samples"),
    (["--grid", "quick", "--gpus-per-trial", "4"], "GPU"),  # this machine has none: refused before Ray starts
    (["--pack", "configs"], "--pack"),
    (["--pack", "lr,seeds", "--scheduler", "asha"], "--pack lr,seeds"),
    (["--search", "optuna", "--pack", "lr,seeds"], "--pack lr,seeds"),
    (["--search", "optuna", "--seeds", "3"], "--pack seeds"),
    (["--storage", "hdfs://namenode:8020/results"], "hdfs"),  # pyarrow's libjvm search is many lines
]


@pytest.mark.parametrize(("flags", "named"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line_and_writes_nothing(flags, named, tmp_path, capsys):
    storage = tmp_path / "results"
    assert main([*flags, *([] if "--storage" in flags else ["--storage", str(storage)])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err
    assert not storage.exists()


def test_more_gpus_or_cpus_than_the_cluster_has_exit_2_through_the_cli(tmp_path, ray_address):
    for flags, named in ((["--gpus-per-trial", "0.25"], "0 GPU"), (["--cpus-per-trial", "3"], "2 CPU")):  # a 2-CPU cluster
        out = sweep(["--grid", "quick", *flags], tmp_path / "results", ray_address, timeout=180)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and named in out.stderr
        assert not (tmp_path / "results").exists()


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder): to show nothing was touched."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def test_restart_and_name_refuse_a_folder_that_is_not_an_experiment(tmp_path, ray_address, capsys):
    """`--storage . --name tune_adder --restart` must not move the package aside, nor a fresh run write into it.
    In this process: refused before Ray is joined, as the CLI does it (`sys.exit(main())`)."""
    (tmp_path / "tune_adder").mkdir()
    (tmp_path / "tune_adder" / "__init__.py").write_text("# not an experiment\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "experiment.json").write_text('{"someone": "else"}\n')  # not this project's record
    (tmp_path / "afile").write_text("x")
    before = tree(tmp_path)
    small = ["--grid", "quick", "--max-steps", "10", "--eval-every", "10"]
    for name in ("tune_adder", "other", "afile"):
        for extra in ([], ["--restart"]):
            argv = [*small, "--name", name, *extra, *TINY, "--storage", str(tmp_path), "--address", ray_address]
            code, stdout, err = cli(argv, capsys)
            assert code == 2, (name, extra, stdout[-2000:], err[-2000:])
            assert len(err.strip().splitlines()) == 1 and name in err and "--name" in err, err
            assert tree(tmp_path) == before, (name, extra)


@pytest.mark.ray  # five real sweep commands, refused before Ray starts (they would start sweeps if the checks came late)
def test_bad_storage_asha_grace_period_and_eval_size_exit_2_before_ray_and_write_nothing(tmp_path):
    """Through the CLI with no --address: a local Ray would start if the checks came late (and a record be left)."""
    (tmp_path / "afile").write_text("x")
    before = tree(tmp_path)
    cases = [
        (["--storage", str(tmp_path / "afile")], "--storage"),
        (["--storage", str(tmp_path / "afile" / "sub")], "--storage"),
        (["--storage", "/proc/tune_adder_results"], "--storage"),  # not writable, even for root
        (["--scheduler", "asha", "--grace-period", "50", "--max-steps", "40", "--storage", str(tmp_path / "r")], "--grace-period"),
        # held-out sets far beyond any machine's memory (tune_adder.train.memory_estimate, per trial of the grid)
        (["--eval-size", str(10**11), "--storage", str(tmp_path / "r")], "--eval-size"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--eval-every", "10", *flags],
                              env=sweep_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for flags, _ in cases]  # fmt: skip
    try:
        for proc, (flags, named) in zip(procs, cases):
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2, (flags, stdout[-2000:], stderr[-2000:])
            assert len(stderr.strip().splitlines()) == 1 and named in stderr, stderr
            assert "ray" not in stdout.lower(), stdout
    finally:
        for proc in procs:  # a check that came late started a sweep: stop it as Ctrl-C would
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait()
    assert tree(tmp_path) == before
    assert not Path("/proc/tune_adder_results").exists()


def test_a_start_that_failed_before_any_trial_does_not_block_the_next_command(tmp_path, ray_address):
    """A record left by a start that died before Tune saved anything (older versions: ASHA's assertion) is no experiment."""
    args = ["--search", "optuna", "--num-samples", "1", "--digits", "2", "--max-steps", "10", "--eval-every", "10",
            "--scheduler", "asha", "--grace-period", "10", "--name", "retry"]  # fmt: skip
    stale = {"name": "retry", "status": "running", "grid": None, "search": "optuna", "scheduler": "asha", "seeds": 1,
             "num_samples": 1, "digits": 2, "max_steps": 10, "stop_when_solved": False, "grace_period": 50,
             "reduction_factor": 3.0, "eval_every": 10, "eval_size": 100, "checkpoint_every": 4, "num_trials": 1,
             "sessions": [{"start_time": "2026-01-01T00:00:00+00:00", "end_time": None}]}  # fmt: skip
    (tmp_path / "retry").mkdir()
    (tmp_path / "retry" / "experiment.json").write_text(json.dumps(stale))
    out = sweep(args, tmp_path, ray_address)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    record = json.loads((tmp_path / "retry" / "experiment.json").read_text())
    assert record["status"] == "completed" and record["grace_period"] == 10 and len(record["sessions"]) == 1
    # --restart starts afresh and keeps the old experiment, whole, under a new name.
    old_files = tree(tmp_path / "retry")
    again = sweep([*args, "--restart"], tmp_path, ray_address)
    assert again.returncode == 0 and "--restart: the previous experiment is kept at" in again.stdout, again.stderr[-2000:]
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("retry-old-")]
    assert tree(kept) == old_files
    assert json.loads((tmp_path / "retry" / "experiment.json").read_text())["status"] == "completed"


@lru_cache(maxsize=1)
def import_seconds() -> float:
    """What starting the sweep's CLI costs on this machine now (Python, Ray and PyTorch imports), before it does anything."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tune_adder.sweep, tune_adder.runner"], env=sweep_env(), cwd=REPO,
                   check=True, timeout=300)  # fmt: skip
    return time.monotonic() - started


@pytest.mark.ray  # a real sweep command, refused when it probes the address
@pytest.mark.parametrize("address", ["127.0.0.1:{free}", "no-such-host.invalid:6379", "ray://127.0.0.1:10001"])
def test_unreachable_or_client_address_exits_2_with_one_line_quickly(address, tmp_path):
    address = address.format(free=free_ports(1)[0])  # a port where nothing listens
    started = time.monotonic()
    out = sweep(["--grid", "quick", "--max-steps", "10", "--eval-every", "10"], tmp_path / "r", address, timeout=90)
    took = time.monotonic() - started
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    assert len(out.stderr.strip().splitlines()) == 1 and address in out.stderr, out.stderr
    # The probe gives up after 10 s (PROBE_TIMEOUT_S; a hang was minutes); the rest is the imports, slow on a busy box.
    assert took < import_seconds() + 15, (took, import_seconds())
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_running_sweep_within_seconds_and_writes_its_frames(sig, tmp_path, ray_address):
    """Also: the frames are live. While the sweep runs they are rewritten at the status pace, and the
    analysis runs on them, noting the trials still running (checked once, under SIGTERM)."""
    args = ["--grid", "quick", "--max-steps", "100000", "--eval-every", "10", "--name", "stopped"]
    cmd = [sys.executable, "-m", "tune_adder.sweep", *args, *TINY, "--status-every", "1", "--storage", str(tmp_path),
           "--address", ray_address]  # fmt: skip
    out_file, err_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out_file, "w") as stdout, open(err_file, "w") as stderr:
        proc = subprocess.Popen(cmd, env=sweep_env(), cwd=REPO, stdout=stdout, stderr=stderr, text=True)
    exp = tmp_path / "stopped"

    def status_lines() -> list[str]:
        return [line for line in out_file.read_text().splitlines() if line.startswith("[stopped ")]

    def live_frames():
        if proc.poll() is not None:
            return True
        try:
            return len(pd.read_parquet(exp / "history.parquet")) >= 2 and len(status_lines()) >= 3
        except (OSError, ValueError):
            return False

    try:
        # Events, not timers: frames with reports in them are on disk while the sweep runs, and status lines printed.
        wait_for(live_frames, 180, "live frames and three status lines")
        assert proc.poll() is None, (out_file.read_text()[-2000:], err_file.read_text()[-2000:])
        live = pd.read_parquet(exp / "trials.parquet")
        assert set(live["stop_reason"]) == {"running"}
        if sig == signal.SIGTERM:
            script = [sys.executable, str(REPO / "analysis" / "plot_convergence.py"), str(exp), "--out", str(tmp_path / "a")]
            analysed = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                      env={**os.environ, "MPLBACKEND": "Agg"})
            assert analysed.returncode == 0, analysed.stderr[-2000:]
            assert "trials still running" in analysed.stdout
        assert proc.poll() is None
        stopped_at = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 130, (proc.returncode, out[-2000:], err[-2000:])
    # A status line about every second (--status-every 1): never two in one second (the code waits the interval
    # between lines), and seldom more than a second or two apart even on a busy box.
    clocks = [line.split()[1] for line in status_lines()]
    gaps = clock_gaps(clocks)
    assert len(gaps) >= 2 and min(gaps) >= 1 and 0.5 <= statistics.median(gaps) <= 3 and max(gaps) <= 20, clocks
    assert all(" of 8 trials ended, " in line for line in status_lines()), status_lines()[-1]  # the quick grid: 8
    assert took < 15, took  # "within seconds" (README, Stopping)
    assert "Traceback" not in err, err[-3000:]
    assert "rerun the same command" in out
    record = json.loads((tmp_path / "stopped" / "experiment.json").read_text())
    assert record["status"] == "interrupted"
    history, trials = frames(tmp_path / "stopped")
    assert len(history) >= 1 and "running" in set(trials["stop_reason"])


def clock_gaps(clocks: list[str]) -> list[int]:
    """Seconds between successive HH:MM:SS times of day (the status lines' UTC clock), across midnight too."""
    seconds = [int(h) * 3600 + int(m) * 60 + int(x) for h, m, x in (c.split(":") for c in clocks)]
    return [(b - a) % 86400 for a, b in zip(seconds, seconds[1:])]


def test_clock_gaps_run_on_across_midnight_utc():
    assert clock_gaps(["23:59:58", "23:59:59", "00:00:01", "00:00:02"]) == [1, 2, 1]
    assert clock_gaps(["12:00:00", "12:01:05"]) == [65]


def test_imports_run_one_way():
    """sweep (the CLI) -> runner -> record -> settings: nothing below the CLI imports it back."""
    code = "import sys, tune_adder.runner, tune_adder.record; print(sorted(m for m in sys.modules if m == 'tune_adder.sweep'))"
    out = subprocess.run([sys.executable, "-c", code], env=sweep_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def test_status_line_counts_the_whole_sweep_and_a_resumed_run_restarts_its_clock():
    """Counts against every trial the sweep will make (Tune creates them lazily); setup, which Tune calls at every
    start, restarts the clock, even on a StatusLine unpickled from an earlier run."""
    import pickle
    from types import SimpleNamespace

    from tune_adder.runner import StatusLine, status_line

    def trial(status, score=None, step=None):
        return SimpleNamespace(status=status, config={"digits": 10, "lr": 0.01, "cell": "RNN"},
                               last_result={} if score is None else {"val_exact_match": score, "step": step})

    trials = [trial("TERMINATED", 1.0, 300), trial("TERMINATED", 0.5, 1000), trial("ERROR"), trial("RUNNING", 0.2, 50),
              trial("PENDING")]  # fmt: skip
    noon = 12 * 3600 + 34 * 60 + 56.0
    line = status_line("full", trials, elapsed=26 * 3600 + 61, total=432, now=noon)  # past a day: no wrap to 02:01:01
    assert line.startswith("[full 12:34:56 UTC, 26:01:01 in] 3 of 432 trials ended, 1 running (1 failed) | best ")
    assert "val_exact_match 1.000 at step 300 (digits=10 lr=0.01 cell=RNN)" in line
    assert "of 5 trials" in status_line("q", trials, 0.0)  # total unknown: the trials Tune has made

    first = StatusLine("full", every=30)
    first.started -= 5 * 3600  # the first run began five hours ago
    restored = pickle.loads(pickle.dumps(first))  # what Tuner.restore hands back
    restored.setup(total_num_samples=432)
    assert time.time() - restored.started < 5 and restored.total == 432


def test_a_fifo_sweep_resumes_whatever_asha_settings_a_rerun_has_and_an_asha_sweep_does_not(tmp_path):
    """ASHA's flags shape no trial of a FIFO sweep, so a FIFO experiment recorded under other ASHA defaults resumes;
    an ASHA experiment whose rungs would change is refused, naming the flag."""
    from tune_adder.record import check_same_settings
    from tune_adder.settings import RESUME_KEYS, UsageError
    from tune_adder.sweep import parse_settings

    def record(argv):
        s = parse_settings([*argv, "--storage", str(tmp_path)])
        return {k: getattr(s, k) for k in RESUME_KEYS}

    fifo = ["--grid", "quick"]
    old_defaults = ["--grace-period", "100", "--reduction-factor", "3", "--asha-metric", "val_exact_match"]
    new_defaults = ["--grace-period", "50", "--reduction-factor", "4", "--asha-metric", "val_loss"]
    check_same_settings(record([*fifo, *old_defaults]), parse_settings([*fifo, *new_defaults, "--storage", str(tmp_path)]))
    asha = [*fifo, "--scheduler", "asha"]
    with pytest.raises(UsageError, match=r"--grace-period 100 there, 50 now; --reduction-factor 3\.0 there, 4\.0 now"):
        check_same_settings(record([*asha, *old_defaults]), parse_settings([*asha, *new_defaults, "--storage", str(tmp_path)]))
    with pytest.raises(UsageError, match="--scheduler 'asha' there, 'fifo' now"):  # the scheduler itself always counts
        check_same_settings(record([*asha, *old_defaults]), parse_settings([*fifo, *new_defaults, "--storage", str(tmp_path)]))


SMALL_INPUT = [  # issue 18, item 7: each refused in one line, before anything is written under the working folder
    (["--grid", "quick", "--reduction-factor", "inf"], "--reduction-factor inf is not valid; it must be a finite number > 1"),
    (["--grid", "quick", "--name", "x" * 300], "--name of 300 characters (300 bytes) is too long; use at most 200"),
    (["--grid", "quick", "--name", "é" * 150], "(300 bytes) is too long"),
    (["--grid", "quick", "--name", "two\nlines"], "--name 'two\\nlines' is not valid"),
    (["--grid", "quick", "--name", "tab\there"], "control characters"),
    (["--grid", "quick", "--storage", "~nosuchuser/x"], "--storage '~nosuchuser/x' is not usable: ~nosuchuser names no user"),
]


@pytest.mark.parametrize(("flags", "named"), SMALL_INPUT, ids=[repr(" ".join(f))[:40] for f, _ in SMALL_INPUT])
def test_odd_names_storage_and_reduction_factor_exit_2_with_one_line_and_write_nothing(flags, named, tmp_path, monkeypatch, capsys):
    """From an empty working folder (a relative --storage lands there). The --address where nothing listens makes a
    missed check end fast (as an unreachable address) instead of starting a sweep here."""
    monkeypatch.chdir(tmp_path)
    argv = [*flags, *([] if "--storage" in flags else ["--storage", str(tmp_path / "results")])]
    code, _, err = cli([*argv, "--address", f"127.0.0.1:{free_ports(1)[0]}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_bare_command_prints_what_to_run_and_starts_nothing(tmp_path):
    """No arguments used to start the 144-trial full grid (hours); --grid full must now be asked for."""
    from tune_adder.settings import UsageError
    from tune_adder.sweep import parse_settings

    for argv in ([], ["--quiet"], ["--seeds", "3", "--storage", str(tmp_path / "r")], ["--scheduler", "asha"]):
        with pytest.raises(UsageError, match="--grid quick"):  # flags without a grid still name no grid
            parse_settings(argv)
    done = subprocess.run([sys.executable, "-m", "tune_adder.sweep"], cwd=tmp_path, env=sweep_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done.stdout[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert all(g in line for g in ("full", "seed", "quick", "gpu-slice", "--help")), line
    assert list(tmp_path.iterdir()) == []
    assert parse_settings(["--grid", "full", "--storage", str(tmp_path / "r")]).grid == "full"  # still there when named


def test_the_printed_plot_command_pastes_whole_with_spaces_in_storage_and_name(tmp_path, ray_address):
    """A replay (milliseconds per trial) into a storage and under a name with spaces: the summary's "plot them:"
    command, split as a shell splits it, names the experiment's folder."""
    from tests.analysis_frames import grid, write_experiment

    specs = grid(lambda c: None, seeds=(0,), digits=(5,), lr=(0.003, 0.03), cell=("RNN", "GRU"))
    for spec in specs:
        spec.update(eval_every=50)
        spec["config"]["max_steps"] = 100
    data = write_experiment(tmp_path / "data", specs, {"grid": "quick", "eval_every": 50})
    storage = tmp_path / "my results"
    args = ["--grid", "quick", "--digits", "5", "--max-steps", "100", "--eval-every", "50", "--replay", str(data),
            "--name", "run one", "--quiet"]  # fmt: skip
    out = sweep(args, storage, ray_address)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("plot them: ")]
    assert shlex.split(line.removeprefix("plot them: ")) == ["python", "analysis/plot_convergence.py", str(storage / "run one")]
