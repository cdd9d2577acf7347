"""Several workers (`pipeline.core.compute`: the local pool of this process + helper processes, and Ray) give
what one process gives: the same extraction table, errors file and error policy (openSMILE eGeMAPS on
the CREMA-D sample clips plus a broken file), byte-identical model.pt, history.csv, evaluation tables
and importance search from a training grid; and the settings come from the environment with one-line
errors. One local Ray instance (2 CPUs) serves the Ray tests and is shut down after them, leaving no
raylet behind. (The whole DAG with 2 local workers against 1: tests/test_pipeline_dvc.py.)"""

from __future__ import annotations

import filecmp
import os
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from pipeline.core.compute import (
    ComputeError,
    ComputeSettings,
    compute_settings,
    map_ordered,
)
from pipeline.core.errors import PipelineError


def _ray_daemons(session_dir: str) -> set[int]:
    """pids of the Ray daemons (raylet, gcs_server) of one Ray session (another test run may have its own)."""
    pids = set()
    for d in Path("/proc").iterdir():
        try:
            if (d.name.isdigit() and (d / "comm").read_text().strip() in ("raylet", "gcs_server")
                    and session_dir in (d / "cmdline").read_bytes().decode(errors="replace")):
                pids.add(int(d.name))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    session = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False).address_info["session_dir"]
    assert _ray_daemons(session), "no raylet started"
    yield ray
    ray.shutdown()
    deadline = time.monotonic() + 20
    while (left := _ray_daemons(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray daemons still running after shutdown: {left}"


RAY2 = ComputeSettings(backend="ray", workers=2)
POOL2 = ComputeSettings(workers=2)  # this process and one helper process
ONE = ComputeSettings(workers=1)  # everything in this process


@pytest.fixture(scope="module", autouse=True)
def _workers_unpickle_this_module():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # helper processes need not import tests/
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# ---- settings (no Ray needed) ----------------------------------------------------------------------


def test_settings_come_from_the_environment_and_bad_values_name_the_variable():
    assert compute_settings({}) == ComputeSettings()
    assert compute_settings({}).backend == "local"
    s = compute_settings({"MER_BACKEND": "Ray", "RAY_ADDRESS": "auto", "MER_WORKERS": "3",
                          "MER_CPUS_PER_WORKER": "2", "MER_GPUS_PER_WORKER": "0.5"})
    assert (s.backend, s.address, s.workers, s.threads()) == ("ray", "auto", 3, 2)
    assert s.resources() == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert compute_settings({"MER_CPUS_PER_WORKER": "0.5"}).threads() == 1
    with pytest.raises(ComputeError, match=r"^MER_BACKEND='spark': Input should be 'local' or 'ray'$"):
        compute_settings({"MER_BACKEND": "spark"})
    with pytest.raises(ComputeError, match=r"^MER_WORKERS='0': .*greater than or equal to 1"):
        compute_settings({"MER_WORKERS": "0"})
    with pytest.raises(ComputeError, match=r"^MER_CPUS_PER_WORKER='x'"):
        compute_settings({"MER_CPUS_PER_WORKER": "x"})


def test_local_map_builds_state_once_and_keeps_order():
    built = []
    out = list(map_ordered(lambda st, x: (st, x * x), [3, 1, 2], setup=lambda: built.append(1) or "s", settings=ONE))
    assert out == [("s", 9), ("s", 1), ("s", 4)] and built == [1]


def test_default_local_workers_are_the_usable_cores_over_the_threads_and_one_on_a_gpu(monkeypatch):
    from pipeline.core import compute, stage
    from pipeline.core.compute import local_workers, worker_count

    monkeypatch.setattr(compute, "usable_cores", lambda: 8)
    monkeypatch.delenv("MER_THREADS", raising=False)
    assert local_workers() == 8 and local_workers(gpu=True) == 1
    monkeypatch.setenv("MER_THREADS", "2")
    assert local_workers() == 4
    assert worker_count(3, ComputeSettings()) == 3  # never more than the items
    assert worker_count(1, ComputeSettings()) == 1 and worker_count(100, ONE) == 1
    assert worker_count(100, ComputeSettings(workers=5), gpu=True) == 5  # MER_WORKERS wins
    assert compute_settings({"MER_WORKERS": "3"}).workers == 3 and compute_settings({}).workers is None
    assert stage.usable_cores() >= 1


def _pid_square(log: Path, x: int):
    # the first items wait (up to a minute) until the helper has built its state, so it surely shares
    # the work however slowly it starts on a loaded machine
    deadline = time.monotonic() + 60
    while x < 2 and len(log.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    if x == 7:
        raise PipelineError("item 7: bad input")
    return x * x, os.getpid()


def _record_setup(log: Path) -> str:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return "state"


def test_local_pool_keeps_order_shares_the_items_and_raises_errors_in_turn(tmp_path):
    log = tmp_path / "setups.txt"
    it = map_ordered(lambda st, x: (st, _pid_square(log, x)), range(12), setup=partial(_record_setup, log), settings=POOL2)
    got = [next(it) for _ in range(7)]
    assert [sq for _, (sq, _) in got] == [x * x for x in range(7)] and {st for st, _ in got} == {"state"}
    pids = {pid for _, (_, pid) in got}
    assert os.getpid() in pids and len(pids) == 2  # this process works too, and one helper
    with pytest.raises(PipelineError, match=r"^item 7: bad input$") as e:
        next(it)
    assert type(e.value) is PipelineError  # itself, one line
    it.close()
    setups = log.read_text().split()
    assert len(setups) == len(set(setups)) == 2  # the state built once per process, not once per item


def _slow_in_helpers(parent: int) -> str:
    if os.getpid() != parent:  # a helper: not ready for a long while
        time.sleep(60)
    return "state"


def test_local_pool_with_little_work_is_done_in_this_process():
    """A stage whose items are done before a helper is ready never waits for one: the helper's setup takes
    a minute here, and every item is done in this process long before (no timing on a loaded machine)."""
    t0 = time.perf_counter()
    out = list(map_ordered(lambda st, x: (x, os.getpid()), range(20), setup=partial(_slow_in_helpers, os.getpid()),
                           settings=POOL2))
    assert [x for x, _ in out] == list(range(20)) and {pid for _, pid in out} == {os.getpid()}
    assert time.perf_counter() - t0 < 50  # the helper's setup was not waited for


def test_local_pool_a_helper_killed_is_one_line(tmp_path):
    def die(x):
        if os.getpid() != parent:  # as the kernel's OOM killer would
            os.kill(os.getpid(), 9)
        time.sleep(0.3)
        return x

    parent = os.getpid()
    with pytest.raises(ComputeError, match=r"^MER_WORKERS=2: a worker process died \(killed, or out of memory\?\)"):
        list(map_ordered(die, range(40), settings=POOL2))


def _slow_pid(x: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def test_under_a_jobserver_a_helper_starts_only_with_a_free_core(monkeypatch):
    """`mer repro`'s jobserver (pipeline.core.jobserver): with no token free the pool starts no helper and
    runs every item here, as MER_WORKERS=1; with one, one helper starts and works; every token taken is
    given back when the pool is done, and the stage's runner keeps the ones it holds."""
    from pipeline.core import jobserver
    from pipeline.core.compute import LAST_POOL

    server = jobserver.start(2)
    try:
        monkeypatch.setenv(jobserver.ENV, str(server.path))
        server.hold(2)  # two stages run: no core free
        assert set(map_ordered(_slow_pid, range(30), settings=ComputeSettings(workers=3))) == {os.getpid()}
        assert LAST_POOL["helpers"] == 0
        server.hold(1)  # one of them ended
        pids = list(map_ordered(_slow_pid, range(60), settings=ComputeSettings(workers=3)))
        assert LAST_POOL["helpers"] == 1 and 0 < LAST_POOL["on_helpers"] < 60 and len(set(pids)) == 2, LAST_POOL
        server.hold(0)
        assert server.held == 0 and [server.tokens.take() for _ in range(3)] == [True, True, False]  # none lost
    finally:
        server.close()
    assert not server.path.exists()


def test_a_jobserver_left_by_a_killed_mer_repro_is_removed_by_the_next(tmp_path):
    import subprocess

    from pipeline.core import jobserver

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"mer-jobserver-{int(gone.stdout)}-abc"  # its process has ended
    live = tmp_path / f"mer-jobserver-{os.getpid()}-def"
    other = tmp_path / "mer-jobserver-notapid-x"
    for folder in (stale, live, other):
        folder.mkdir()
        os.mkfifo(folder / "tokens")
    assert jobserver.remove_stale(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    server = jobserver.start(1)
    try:
        assert server.dir.name.startswith(f"mer-jobserver-{os.getpid()}-")
    finally:
        server.close()


def test_a_jobserver_hands_a_freed_core_to_the_next_stage():
    from pipeline.core import jobserver

    server = jobserver.start(3)
    try:
        other = jobserver.Tokens(str(server.path))  # a stage's pool
        server.hold(2)
        assert other.take() and not other.take()  # 3 cores, 2 stages: one helper
        server.hold(3)  # a third stage: there is no token left for it, and it runs anyway
        assert server.held == 2
        other.give()
        server.hold(2)
        assert server.held == 2 and other.take() and not other.take()
        other.close()
    finally:
        server.close()
    assert jobserver.client({}) is None and jobserver.client({jobserver.ENV: str(server.path)}) is None  # gone: none


def test_without_ray_or_with_a_dead_address_the_error_is_one_line(monkeypatch):
    from pipeline.core.compute import ray_runtime

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ComputeError, match=r"^MER_BACKEND=ray: Ray is not installed; `pip install ray`"):
        ray_runtime(ComputeSettings(backend="ray"))
    monkeypatch.undo()
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected")
    with pytest.raises(ComputeError, match=r"^RAY_ADDRESS='127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1"):
        ray_runtime(ComputeSettings(backend="ray", address="127.0.0.1:1"))  # Ray itself would retry for ever
    assert not ray.is_initialized()


def test_work_groups_shrink_to_single_clips_so_workers_finish_together_and_never_exceed_the_batch():
    from pipeline.extract.runner import GUIDE, work_groups

    assert GUIDE == 2
    sizes = lambda batch, n, workers: [len(g) for g in work_groups(list(range(n)), batch, workers)]  # noqa: E731
    # faces' unbounded batch: a quarter of what is left each time (2 workers), not one group on one worker
    assert sizes(sys.maxsize, 96, 2) == [24, 18, 14, 10, 8, 6, 4, 3, 3, 2, 1, 1, 1, 1]
    assert sizes(16, 96, 2) == [16, 16, 16, 12, 9, 7, 5, 4, 3, 2, 2, 1, 1, 1, 1]  # never above batch_clips
    big = sizes(16, 10_000, 16)  # a real corpus on 16 workers: batch_clips-long groups but for the last hundred
    assert big[:595] == [16] * 595 and len(big) == 700 and big[-31:] == [1] * 31
    assert sizes(16, 3, 2) == [1, 1, 1] and sizes(1, 5, 2) == [1] * 5 and sizes(16, 0, 2) == []
    groups = work_groups(list(range(97)), 16, 2)
    assert [c for g in groups for c in g] == list(range(97))  # every clip once, in order


@pytest.mark.parametrize("stage", ["faces", "vggface"])
def test_an_extractors_rows_do_not_depend_on_how_clips_are_grouped(stage, crema_d_dir, tmp_path):
    """Workers get the uncached clips in other groups than the one-process loop (`work_groups`); the two
    extractors that batch across clips give the same table, byte for byte, either way."""
    from pipeline.corpus.manifest import Clip
    from pipeline.extract.faces import FacesExtractor, read_detections
    from pipeline.extract.faces.params import FacesParams
    from pipeline.extract.params import FaceEmbedParams
    from pipeline.extract.runner import extract_corpus
    from pipeline.extract.vggface import VggFaceExtractor

    clips = [Clip(p.stem, "1001", str(p), 2.0) for p in sorted((crema_d_dir / "VideoFlash").glob("*.flv"))]
    faces = FacesExtractor(FacesParams(rate_hz=2.0), device="cpu")
    extractor = faces
    if stage == "vggface":
        meta, det = read_detections(extract_corpus(faces, clips, out=tmp_path / "det.parquet", errors_dir=tmp_path))
        extractor = VggFaceExtractor(FaceEmbedParams(bf16=False), detections=det, faces_meta=meta, device="cpu")
    assert extractor.batch_clips >= len(clips)  # locally: one group of all three
    tables = []
    for size in (extractor.batch_clips, 1):
        type(extractor).batch_clips, kept = size, type(extractor).batch_clips
        try:
            tables.append(extract_corpus(extractor, clips, out=tmp_path / f"{size}.parquet", errors_dir=tmp_path))
        finally:
            type(extractor).batch_clips = kept
    assert filecmp.cmp(*tables, shallow=False)


# ---- Ray -------------------------------------------------------------------------------------------


def test_ray_map_keeps_order_and_raises_errors_in_turn(ray_local):
    def slow_square(x):  # later items finish first
        time.sleep(0.05 * (4 - x))
        if x == 3:
            raise PipelineError("item 3: bad input")
        return x * x

    it = map_ordered(slow_square, range(5), settings=RAY2)
    got = [next(it) for _ in range(3)]
    assert got == [0, 1, 4]
    with pytest.raises(PipelineError, match=r"^item 3: bad input$") as e:
        next(it)
    assert type(e.value) is PipelineError  # itself, not wrapped in Ray's task error
    it.close()


def _egemaps_build(log: Path):
    """The factory each actor calls: records its process, builds the extractor."""
    from pipeline.extract.opensmile_lld import EgemapsLld, LldParams

    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return EgemapsLld(LldParams())


@pytest.mark.parametrize("backend", ["pool", "ray"])
def test_extraction_on_workers_equals_one_process_and_follows_on_error(backend, request, crema_d_dir, tmp_path):
    if backend == "ray":
        request.getfixturevalue("ray_local")
    workers = RAY2 if backend == "ray" else POOL2
    from pipeline.corpus.manifest import Clip
    from pipeline.extract.opensmile_lld import EgemapsLld, LldParams
    from pipeline.extract.runner import RunStats, StageError, extract_corpus

    clips = [Clip(p.stem, "1001", str(p), 2.0) for p in sorted((crema_d_dir / "VideoFlash").glob("*.flv"))]
    bad = tmp_path / "broken.flv"
    bad.write_bytes(b"not a video")
    clips.insert(1, Clip("broken", "1001", str(bad), 2.0))
    log = tmp_path / "builds.txt"
    runs = {}
    for name, settings, factory in [("local", ONE, None), ("ray", workers, partial(_egemaps_build, log))]:
        stats = RunStats()
        out = extract_corpus(EgemapsLld(LldParams()), clips, out_dir=tmp_path / name, errors_dir=tmp_path / name,
                             on_error="skip", cache_dir=tmp_path / name / "cache", stats=stats,
                             settings=settings, factory=factory)
        runs[name] = out, stats
    (local, ls), (ray_out, rs) = runs["local"], runs["ray"]
    assert filecmp.cmp(local, ray_out, shallow=False)  # the table, byte for byte
    assert filecmp.cmp(tmp_path / "local/egemaps.csv", tmp_path / "ray/egemaps.csv", shallow=False)
    assert (rs.clips, rs.extracted, rs.cached) == (ls.clips, ls.extracted, ls.cached) == (4, 3, 0)
    assert rs.errors == ls.errors and [c for c, _ in rs.errors] == ["broken"]
    cached = lambda d: sorted(p.name for p in (tmp_path / d / "cache").rglob("*.arrow"))  # noqa: E731
    assert cached("ray") == cached("local") and len(cached("ray")) == 3
    builds = log.read_text().split() if log.exists() else []
    # one extractor per actor, not one per clip; the pool's own process uses the caller's extractor, and
    # its helper builds one if it comes up before the four clips are done
    assert len(builds) == len(set(builds)) and len(builds) in ((2,) if backend == "ray" else (0, 1))

    # `fail`: the same clip stops the run with the same message; the extractor itself travels when no factory is given
    messages = []
    for name, settings in [("local", ONE), ("ray", ComputeSettings(backend="ray", workers=1) if backend == "ray" else POOL2)]:
        with pytest.raises(StageError) as e:
            extract_corpus(EgemapsLld(LldParams()), clips, out_dir=tmp_path / f"f{name}", errors_dir=tmp_path / f"f{name}",
                           settings=settings)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and messages[0].startswith(f"egemaps: clip broken: {bad}")
    assert not (tmp_path / "fray" / "egemaps.parquet").exists()

    # a factory that builds another configuration is refused, not mixed into the table (on Ray, where the
    # one actor surely takes the clips)
    if backend == "pool":
        return
    with pytest.raises(StageError, match=r"^egemaps: the extractor built on a worker is configured differently"):
        extract_corpus(EgemapsLld(LldParams()), clips[2:], out_dir=tmp_path / "x", errors_dir=tmp_path / "x",
                       settings=ComputeSettings(backend="ray", workers=1), factory=partial(EgemapsLld, LldParams(sample_rate=8000)))


@pytest.mark.parametrize("backend", ["pool", "ray"])
def test_training_evaluation_and_importance_on_workers_are_byte_identical(backend, request, tmp_path, monkeypatch):
    if backend == "ray":
        request.getfixturevalue("ray_local")
    env = {"MER_BACKEND": "ray", "MER_WORKERS": "2"} if backend == "ray" else {"MER_BACKEND": "local", "MER_WORKERS": "2"}
    one = {"MER_BACKEND": "local", "MER_WORKERS": "1"}
    import torch
    from test_train_evaluate import PARAMS, make_segments

    from pipeline.runs.files import HISTORY_FILE, MODEL_FILE, run_dir
    from pipeline.train.families import train_all

    segments = make_segments(40)
    if backend == "pool":  # this process's forkserver started (it imports torch once), as in a stage's second pool
        list(map_ordered(lambda x: time.sleep(0.5), range(8), settings=POOL2))
    # enough runs, of enough work, that the helper process (or the Ray workers) surely train some
    seeds = [0, 1] if backend == "ray" else list(range(8))
    params = PARAMS.model_copy(update={"seeds": seeds, "epochs": 2} if backend == "ray" else {"seeds": seeds, "epochs": 16, "patience": 16})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the local stage's MER_THREADS=1, as each worker pins
    try:
        for k, v in one.items():
            monkeypatch.setenv(k, v)
        local = train_all(segments, params, tmp_path / "local", device="cpu", progress=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        remote = train_all(segments, params, tmp_path / "ray", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    if backend == "pool":
        from pipeline.core.compute import LAST_POOL

        assert LAST_POOL["workers"] == 2 and 0 < LAST_POOL["on_helpers"] < len(seeds), LAST_POOL  # both processes trained
    assert remote == local and list(remote["crossmodal/standard"]) == [f"seed_{s}" for s in seeds]
    for seed in seeds:
        for f in (MODEL_FILE, HISTORY_FILE):
            a = run_dir(tmp_path / "local", "crossmodal", "standard", seed) / f
            b = run_dir(tmp_path / "ray", "crossmodal", "standard", seed) / f
            assert a.read_bytes() == b.read_bytes(), f"seed {seed}: {f} differs"

    # the evaluation grid (each run a Ray work item) and the importance search give the same files
    from pipeline.evaluate.grid import evaluate_all
    from pipeline.evaluate.importance import ImportanceParams, importance_search
    from pipeline.evaluate.params import EvaluateParams

    conditions = EvaluateParams(conditions=["all_present", "each_missing", "clip_zero_grid", "burst_grid"])
    out = {}
    for backend, settings in (("local", one), ("ray", env)):
        for k, v in settings.items():
            monkeypatch.setenv(k, v)
        torch.set_num_threads(1)
        try:
            evaluate_all(segments, tmp_path / "local", conditions, tmp_path / f"eval_{backend}", tmp_path / f"head_{backend}.json",
                         device="cpu", progress=False)
            out[backend] = importance_search(segments, tmp_path / "local", ImportanceParams(), device="cpu", progress=False)
        finally:
            torch.set_num_threads(threads)
    assert out["ray"] == out["local"] and list(out["local"]) == ["crossmodal"]
    files = sorted(p.name for p in (tmp_path / "eval_local").iterdir())
    assert {"results.csv", "predictions.csv", "masked_steps.csv", "summary.csv"} <= set(files)
    for name in files:
        assert (tmp_path / "eval_local" / name).read_bytes() == (tmp_path / "eval_ray" / name).read_bytes(), f"{name} differs"
    assert (tmp_path / "head_local.json").read_bytes() == (tmp_path / "head_ray.json").read_bytes()
    masked = (tmp_path / "eval_local" / "masked_steps.csv").read_text().splitlines()
    assert len(masked) > 1 and len(set(masked)) == len(masked)  # the fold's rows, once (not once per worker)
