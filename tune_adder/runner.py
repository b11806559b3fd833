"""Run a validated sweep on Ray Tune: start or join Ray, build or restore the Tuner, write frames and summary.

`tune_adder.sweep` parses the command line and calls `run`; this is where Ray Tune is driven. The experiment
record is `tune_adder.record`, the settings `tune_adder.settings`: neither imports this module or the CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Iterator


from tune_adder import spaces, testhooks
from tune_adder.frames import ERROR, RUNNING, TERMINATED, best_trials, pack_list
from tune_adder.metrics import ASHA_METRICS, CONFIG_COLUMNS, METRIC, MODE, PACK_SEEDS, STEP
from tune_adder.results import HISTORY_FILE, TRIALS_FILE, LiveFrames, write_frames
from tune_adder.storage import Storage
from tune_adder.record import COMPLETED, FAILED, INTERRUPTED, PARTIAL, check_same_settings, finish_record, read_record, start_record
from tune_adder.settings import EXPERIMENT_FILE, INTERRUPTED_EXIT, OPTUNA_FILE, Settings, UsageError

# Save Tune's experiment state at least this often (seconds), so a killed driver loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
# The old output engine honours verbose=0 (the new one prints its own boxes); our StatusLine reports progress.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Forced state snapshots after checkpoints are what make a kill -9 cheap here: do not warn about them.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# A failed trial is one line from FailureLines below, not Ray's traceback (that stays in its error.txt).
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
import ray  # noqa: E402  (after the environment it reads)
from ray import tune  # noqa: E402

from ray.tune.search.optuna import OptunaSearch  # noqa: E402
from optuna.exceptions import UpdateFinishedTrialError  # noqa: E402

from tune_adder.replay import Recording  # noqa: E402
from tune_adder.trainable import replay_adder, train_adder, train_pack  # noqa: E402

# A cluster that autoscales from zero workers (cluster/config.yaml) has no room for a trial until the
# autoscaler adds a node; its head exports this (seconds) so a sweep asks for a node and waits for it.
NODE_WAIT_ENV = "TUNE_ADDER_NODE_WAIT_S"
PROBE_TIMEOUT_S = 10  # for each of two questions to --address before Ray is asked to join it: a TCP connect, a GCS request
CHECKPOINTS_KEPT = 2  # per trial: the latest and one before it, in case the latest was cut short


def run(s: Settings, command: str) -> int:
    """Run, resume or summarise the experiment `s.name`; returns the process exit code."""
    storage = Storage.from_arg(s.storage)
    exp_path = storage.path(s.name)
    record = _existing_record(storage, s)
    if record is not None and record.get("status") == COMPLETED and not s.restart:
        print(f"experiment {s.name} is already complete; nothing to run (--restart starts it afresh)")
        _print_summary(storage, s.name, record)
        return 0
    _start_ray(s)
    # SIGTERM (a scheduler, `kill`) stops the sweep as Ctrl-C does: Tune ends the trials, saves its state and
    # the frames are written; without this Ray's own handler would exit at once.
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        if s.restart and storage.exists(exp_path):
            moved = storage.move_aside(exp_path, "old-" + time.strftime("%Y%m%d-%H%M%S"))
            print(f"--restart: the previous experiment is kept at {moved}")
            record = None
        resume = not s.restart and tune.Tuner.can_restore(exp_path, storage_filesystem=storage.fs)
        tuner = _restore_tuner(s, storage) if resume else _new_tuner(s, storage)
        record = start_record(s, command, record if resume else None, ray.__version__)  # once the Tuner is built: no record of a failed start
        storage.write_json(storage.path(s.name, EXPERIMENT_FILE), record)
        print(f"{'resuming' if resume else 'starting'} sweep {s.name} ({record['num_trials']} trials) in {storage.uri_of(s.name)}", flush=True)
        testhooks.announce()  # a stray TUNE_ADDER_TEST_* export would make trials fail or block: say so
        session_start = time.time()
        try:
            tuner.fit()
        finally:
            # Frames are written whatever happened to the trials, errors and interruptions included.
            _, trials = write_frames(storage, s.name)
            finish_record(storage, s.name, record, trials, session_start)
    finally:
        ray.shutdown()
    _print_summary(storage, s.name, record)
    if record["status"] == INTERRUPTED:
        return INTERRUPTED_EXIT
    return 1 if record["status"] in (PARTIAL, FAILED) else 0


# ---- experiment.json ----------------------------------------------------------------------------
def _existing_record(storage: Storage, s: Settings) -> dict[str, Any] | None:
    """The experiment's record if a rerun may resume it; refuses what is not ours or was run otherwise."""
    record = read_record(storage, s.name)
    if record is None or s.restart:
        return record
    if not tune.Tuner.can_restore(storage.path(s.name), storage_filesystem=storage.fs):
        return None  # a start that failed before Tune saved any trial: it binds nothing, the folder is reused
    check_same_settings(record, s)
    return record


# ---- Ray ----------------------------------------------------------------------------------------
def _start_ray(s: Settings) -> None:
    """Join --address, or start a local Ray sized to this machine; refuse trials the cluster cannot hold."""
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)  # "Trials did not complete": we list them ourselves
    # On resume Tune's ExperimentAnalysis reads each trial's progress.csv for dataframes the sweep never uses, and warns
    # "Failed to fetch metrics" for every trial without one (14 lines on a resumed quick grid); the frames are ours.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Ray 2.60 opens every local start with "Token authentication is enabled ... Set RAY_AUTH_MODE=disabled to opt
    # out": advice README's Network section gives the other way. Only that line goes; its warning when auth is
    # disabled ("Anyone with network access ... can run arbitrary code") stays.
    logging.getLogger(TOKEN_SETUP_LOGGER).addFilter(_DropOptOutAdvice())
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
    hooks = testhooks.forwarded_env()  # empty outside the tests
    if hooks:
        quiet["runtime_env"] = {"env_vars": hooks}
    if s.address is None:
        import torch

        cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
        _check_fits(s, cpus, gpus)  # before starting anything
        _private_token()
        with _own_sessions():
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, **quiet)
        return
    quiet.pop("include_dashboard")  # the cluster's dashboard is the cluster's business
    _probe(s.address)
    try:
        ray.init(address=s.address, **quiet)
    except ConnectionError as e:  # "auto" with no cluster on this machine, or a GCS that went away
        raise UsageError(f"--address {s.address!r}: could not join a Ray cluster ({str(e).splitlines()[0]})") from None
    try:
        _wait_for_room(s, float(os.environ.get(NODE_WAIT_ENV) or 0))
    except UsageError:
        ray.shutdown()
        raise


TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


class _DropOptOutAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")

    def __eq__(self, other: object) -> bool:  # one filter however often _start_ray runs in a process
        return isinstance(other, _DropOptOutAdvice)

    __hash__ = logging.Filter.__hash__


def _private_token() -> None:
    """Create the local Ray's auth token (~/.ray/auth_token) readable by its owner only, before Ray starts.

    The token is what guards the local Ray's ports, which Ray 2.60 opens on every interface (README). Ray writes a
    missing token readable by every user (the umask's 0644) and reuses one it finds, so the sweep writes it first,
    0600 from its first moment; one we own that an earlier Ray left readable is made private. Not the umask around
    ray.init: Ray's processes and the trials would inherit it, and with it owner-only results.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode is not None and mode.lower() != "token") or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return  # token auth off, or a token Ray takes from elsewhere
    folder = os.path.join(os.path.expanduser("~"), ".ray")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    token = os.path.join(folder, "auth_token")
    try:
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if os.stat(token).st_uid == os.getuid():
            os.chmod(token, 0o600)
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # as Ray's own generator: 256 random bits in hex


@contextlib.contextmanager
def _own_sessions() -> Iterator[None]:
    """While ray.init starts the local Ray, its processes (GCS, raylet, monitors; the raylet's agents and workers
    follow the raylet) start in sessions of their own, outside the driver's process group.

    `timeout`, `kill -TERM -PGID` and a shell's job control signal a whole process group; Ray 2.60 starts its
    processes in the driver's, so a group SIGTERM killed the GCS and raylet under the driver as it stopped Tune
    (a 60 s stall, exit 1, no frames, processes left). Outside it, only the driver hears the signal, stops Tune as
    Ctrl-C does and shuts Ray down. A killed driver is as before: Ray's kernel fate-sharing ends the GCS, raylet and
    monitors (the raylet's two agents outlive it, with or without this). Ray has no option for it: its launcher class
    (`ray._private.services.ConsolePopen`) is swapped for the call.
    """
    from ray._private import services

    launcher = services.ConsolePopen

    class OwnSession(launcher):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "start_new_session": True})

    services.ConsolePopen = OwnSession
    try:
        yield
    finally:
        services.ConsolePopen = launcher


def _probe(address: str) -> None:
    """Fail fast unless a Ray GCS answers at HOST:PORT: ray.init would retry for many minutes, deaf to signals, both
    where nothing listens and where something else does (the dashboard's 8265 is the likely typo)."""
    given = f"--address {address!r}"
    if address == "auto" and os.environ.get("RAY_ADDRESS"):  # what ray.init joins for "auto" (e.g. under `ray job submit`)
        address = os.environ["RAY_ADDRESS"]
        given += f" (RAY_ADDRESS {address!r})"
        if "://" in address:
            raise UsageError(f"{given}: Ray Client (ray://) is not supported; set RAY_ADDRESS to the head's HOST:PORT")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" without RAY_ADDRESS and the like: Ray finds a running Ray itself, and fails fast if there is none
    host = host.strip("[]")  # [::1]:6379
    where = "check that a Ray head runs there (`ray status` on it) and that the port is its GCS port (6379 unless set)"
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"{given}: nothing answers at {host} port {port} ({e.strerror or e}); {where}, and that no firewall is between") from None
    if not _gcs_answers(address):
        raise UsageError(f"{given}: {host} port {port} is open but no Ray GCS answers there within {PROBE_TIMEOUT_S} s "
                         f"(8265 is the dashboard's); {where}")


# Ray's GCS client asks the cluster id, ray.init's first request. In a child process: against a port that is not a
# GCS it retries for 40 s and prints C++ warnings, and a thread stuck in it would hold up the driver's exit.
_ASK_GCS = """
import os, sys, threading
import ray._raylet
said = []
def ask():
    try:
        ray._raylet.GcsClient(address=sys.argv[1])
        said.append("answered")
    except Exception as e:  # an answer too: a GCS that refuses us (a wrong token) fails at once, not after 40 s
        said.append("refused")
asking = threading.Thread(target=ask, daemon=True)
asking.start()
asking.join(float(sys.argv[2]))
print(said[0] if said else "silent", flush=True)
os._exit(0)
"""


def _gcs_answers(address: str) -> bool:
    """Whether a Ray GCS at HOST:PORT answers a request within PROBE_TIMEOUT_S (the child's Python start aside).
    Only silence counts against it: a child that could not ask leaves the question to ray.init, as before."""
    try:
        asked = subprocess.run([sys.executable, "-c", _ASK_GCS, address, str(PROBE_TIMEOUT_S)], capture_output=True,
                               text=True, timeout=PROBE_TIMEOUT_S + 60)  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return asked.stdout.strip() != "silent"


def _wait_for_room(s: Settings, wait_s: float) -> None:
    """Check the joined cluster can hold a trial; on one that autoscales, ask for a node and wait up to wait_s."""
    from ray.autoscaler.sdk import request_resources

    deadline, asked = time.monotonic() + wait_s, False
    while True:
        resources = ray.cluster_resources()
        try:
            _check_fits(s, resources.get("CPU", 0), resources.get("GPU", 0))
            break
        except UsageError:
            if time.monotonic() >= deadline:
                raise
        if not asked:
            bundle = {"CPU": s.cpus_per_trial, **({"GPU": s.gpus_per_trial} if s.gpus_per_trial else {})}
            request_resources(bundles=[bundle])
            print(f"waiting up to {wait_s:.0f} s for the autoscaler to add a node for one trial ({bundle})", flush=True)
            asked = True
        time.sleep(2)
    if asked:
        request_resources(bundles=[])  # from here Tune's own demand scales the cluster; drop our request


def _check_fits(s: Settings, cpus: float, gpus: float) -> None:
    # Tune would wait forever for a trial that no node can hold.
    if s.gpus_per_trial > gpus:
        raise UsageError(f"--gpus-per-trial {s.gpus_per_trial:g} is more than the {gpus:g} GPU(s) this Ray cluster has; use at most {gpus:g}")
    if s.cpus_per_trial > cpus:
        raise UsageError(f"--cpus-per-trial {s.cpus_per_trial:g} is more than the {cpus:g} CPU(s) this Ray cluster has; use at most {cpus:g}")


def _trainable(s: Settings):
    if s.replay:  # the recording goes to the workers once, through Ray's object store
        trainable = tune.with_parameters(replay_adder, recording=Recording.load(s.replay))
    else:
        trainable = train_adder if s.pack == "none" else train_pack
    return tune.with_resources(trainable, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})


def _constants(s: Settings) -> dict[str, Any]:
    """Config keys every trial shares."""
    return {
        "max_steps": s.max_steps, "eval_every": s.eval_every, "eval_size": s.eval_size,
        "stop_when_solved": s.stop_when_solved, "checkpoint_every": s.checkpoint_every,
    }  # fmt: skip


def _grid_search(s: Settings) -> tuple[dict[str, Any], Any, int]:
    """The grid's configs x seeds as explicit points: a grid need not be a full cross product (the seed grid)."""
    from ray.tune.search import BasicVariantGenerator

    points = spaces.grid_points(s.trial_configs(), s.seed_values(), s.pack)
    keys = sorted({k for p in points for k in p})
    # Tune wants every point's key declared in the space; the points then fix every value.
    space = {k: tune.choice(sorted({p[k] for p in points if k in p}, key=str)) for k in keys}
    return {**space, **_constants(s)}, BasicVariantGenerator(points_to_evaluate=points), len(points)


def _optuna_search(s: Settings, storage: Storage) -> tuple[dict[str, Any], Any, int]:
    """TPE, seeded; the study lives in an SQLite file in the experiment folder when storage is local."""
    import optuna

    study_storage = None
    if storage.is_local:
        os.makedirs(storage.path(s.name), exist_ok=True)
        study_storage = optuna.storages.RDBStorage(f"sqlite:///{storage.path(s.name, OPTUNA_FILE)}")
    searcher = ResumableOptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=0), study_name=s.name, storage=study_storage, metric=METRIC, mode=MODE
    )
    seeds = {PACK_SEEDS: pack_list(s.seed_values())} if s.pack == "seeds" else {"seed": 0}
    space = {**(_recorded_space(s) if s.replay else spaces.optuna_space(s.digits)), **seeds, **_constants(s)}
    return space, searcher, s.num_samples


def _recorded_space(s: Settings) -> dict[str, Any]:
    """An Optuna replay searches only the values the dataset recorded (no invented numbers between grid points)."""
    recording = Recording.load(s.replay)
    space: dict[str, Any] = {"digits": s.digits}
    for key in ("lr", "layers", "cell", "hidden", "embed_dim", "batch_size", "base"):
        values = recording.values(key)
        space[key] = values[0] if len(values) == 1 else tune.choice(values)
    return space


def _scheduler(s: Settings):
    if s.scheduler == "asha":
        # stop_last_trials=False: a trial that reaches max_steps ends by itself and reports how it ended.
        return tune.schedulers.ASHAScheduler(
            time_attr=STEP, metric=s.asha_metric, mode=ASHA_METRICS[s.asha_metric], max_t=s.max_steps, grace_period=s.grace_period,
            reduction_factor=s.reduction_factor, stop_last_trials=False,
        )  # fmt: skip
    return tune.schedulers.FIFOScheduler()


def _run_config(s: Settings, storage: Storage) -> tune.RunConfig:
    callbacks = [FailureLines(s.max_failures), LiveFrames(storage, s.name, s.status_every)]
    callbacks += [] if s.quiet else [StatusLine(s.name, s.status_every)]
    if s.replay:
        # A replay's trials last milliseconds: Tune's TensorBoard and CSV loggers cost more than the trials
        # (144 replayed trials: 89 s with them, 55 s without). Keep only result.json, which the frames read.
        from ray.tune.logger import JsonLoggerCallback

        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        callbacks.append(JsonLoggerCallback())
    return tune.RunConfig(
        name=s.name,
        storage_path=storage.uri,
        verbose=0,  # our own status line instead of Tune's tables
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        callbacks=callbacks,
    )


def _new_tuner(s: Settings, storage: Storage) -> tune.Tuner:
    space, searcher, num_samples = _optuna_search(s, storage) if s.search == "optuna" else _grid_search(s)
    # reuse_actors: a finished trial's worker process takes the next trial, saving a Python+torch start each.
    # No metric at the top: the searcher (Optuna scores METRIC) and ASHA (--asha-metric) each carry their own.
    tune_config = tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(s), num_samples=num_samples, reuse_actors=True)
    return tune.Tuner(_trainable(s), param_space=space, tune_config=tune_config, run_config=_run_config(s, storage))


def _restore_tuner(s: Settings, storage: Storage) -> tune.Tuner:
    # Same trainable (and so the same name) as the first run; unfinished and errored trials continue
    # from their latest checkpoints, finished ones are kept as they are.
    tuner = tune.Tuner.restore(
        storage.path(s.name), _trainable(s), resume_unfinished=True, resume_errored=True, storage_filesystem=storage.fs
    )
    # Tune restores the first run's RunConfig from its pickle: its callbacks and failure settings would silently
    # overrule this run's --max-failures, --quiet and --status-every (flags a rerun may change). This run's apply.
    run_config = tuner._local_tuner.get_run_config()  # no public setter in Ray 2.60; ray:// is refused earlier
    fresh = _run_config(s, storage)
    run_config.callbacks, run_config.failure_config = fresh.callbacks, fresh.failure_config
    return tuner


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that lets a finished trial report its end again after the driver was killed.

    Tune may restore a trial whose end reached the Optuna study but not Tune's last state snapshot;
    the trainable then re-reports its final result, which Optuna refuses for a closed trial.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            pass  # already recorded in the study before the crash

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        try:
            super().on_trial_complete(trial_id, result, error)
        except ValueError as e:
            if "Cannot tell a" not in str(e):  # Optuna's words for a trial it has already closed
                raise


# ---- output -------------------------------------------------------------------------------------
class StatusLine(tune.Callback):
    """One line every `every` seconds: how many of the sweep's trials have ended, and the best result so far."""

    def __init__(self, name: str, every: float) -> None:
        self.name, self.every = name, every
        self.total: int | None = None
        self.started = self.last = time.time()

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        # Tune calls this at every start, a resumed one too: the clock counts from here, and the total is every
        # trial the sweep will make (Tune creates them lazily).
        self.started = self.last = time.time()
        self.total = total_num_samples

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.time() - self.last >= self.every:
            self.last = time.time()
            print(status_line(self.name, trials, time.time() - self.started, self.total), flush=True)


class FailureLines(tune.Callback):
    """One line per failure of a trial: whether Ray retries it, and where its error log is (quiet or not)."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        print(
            f"trial {trial.trial_id} failed ({_short_config(trial.config)}); retrying it from its last checkpoint "
            f"(retry {trial.num_failures} of {self.max_failures}); error log: {_error_log(trial)}",
            flush=True,
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        tries = "no retries left" if self.max_failures == 0 else f"no retries left after {self.max_failures}"
        print(
            f"trial {trial.trial_id} failed for good ({_short_config(trial.config)}; {tries}, see --max-failures); "
            f"error log: {_error_log(trial)}",
            flush=True,
        )


def _error_log(trial) -> str:
    """The trial's error.txt (Ray appends every failure's traceback to it), in the experiment's storage."""
    return f"{trial.storage.trial_fs_path}/error.txt"


def _short_config(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={config[k]}" for k in CONFIG_COLUMNS if k in config and k != "max_steps")


def status_line(name: str, trials: list, elapsed: float, total: int | None = None, now: float | None = None) -> str:
    """`[name HH:MM:SS UTC, H:MM:SS in] E of N trials ended, R running (F failed) | best ...`: the time of day, the
    time since this run started, and the counts over the whole sweep (N: every trial it will make, the ones
    Tune has not created yet included; trials ended in earlier runs of a resumed sweep count as ended)."""
    ended = sum(t.status in (TERMINATED, ERROR) for t in trials)
    running = sum(t.status == RUNNING for t in trials)
    failed = sum(t.status == ERROR for t in trials)
    hours, rest = divmod(int(elapsed), 3600)
    clock = time.strftime("%H:%M:%S", time.gmtime(time.time() if now is None else now))
    head = (f"[{name} {clock} UTC, {hours}:{rest // 60:02d}:{rest % 60:02d} in] {ended} of {max(total or 0, len(trials))} "
            f"trials ended, {running} running" + (f" ({failed} failed)" if failed else ""))
    scored = [t for t in trials if t.last_result and t.last_result.get(METRIC) is not None]
    best = max(scored, key=lambda t: t.last_result[METRIC], default=None)
    if best is None:
        return head
    return f"{head} | best {METRIC} {best.last_result[METRIC]:.3f} at step {best.last_result.get(STEP)} ({_short_config(best.config)})"


def _trial_folders(storage: Storage, name: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = storage.fs.get_file_info(pafs.FileSelector(storage.path(name)))
    return [i.path for i in infos if i.type == pafs.FileType.Directory]


def _print_summary(storage: Storage, name: str, record: dict[str, Any]) -> None:
    trials = storage.read_parquet(storage.path(name, TRIALS_FILE))
    counts = ", ".join(f"{n} {k}" for k, n in trials["stop_reason"].value_counts().items())
    print(f"\nsweep {name}: {len(trials)} of {record['num_trials']} trials ({counts}); status {record['status']}")
    columns = [*[c for c in CONFIG_COLUMNS if trials[c].nunique() > 1 or c in ("digits", "cell", "lr")], "best_val_exact_match", "steps_to_solve", "stop_reason"]
    print(f"best configs by {METRIC} (then fewest steps to solve):")
    print(best_trials(trials)[columns].to_string(index=False))
    exp_path = storage.path(name)
    print(f"\nresults: {storage.uri_of(name, HISTORY_FILE)} (every evaluation), {storage.uri_of(name, TRIALS_FILE)} (one row per trial)")
    if not storage.is_local:  # the analysis reads local folders: copy the experiment here first, with pyarrow's own copy
        code = f"import pyarrow.fs; pyarrow.fs.copy_files({json.dumps(storage.uri_of(name))}, {json.dumps(name)})"
        print(f"copy them here: python -c {shlex.quote(code)}")
    print(f"plot them: python analysis/plot_convergence.py {shlex.quote(exp_path if storage.is_local else name)}")  # pastable, spaces and all
    failed = trials[trials["status"] == ERROR]
    if len(failed):
        print(f"{len(failed)} trials failed (stop_reason error); their logs:")
        for row in failed.itertuples():
            (folder,) = [t for t in _trial_folders(storage, name) if row.trial_id in t] or [exp_path]
            print(f"  {row.trial_id}: {folder}/error.txt")
        print("rerun the same command to retry them from their last checkpoints")
    elif record.get("status") != COMPLETED:
        print("the sweep did not finish: rerun the same command to continue it")
