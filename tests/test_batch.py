"""facevox batch: both engines, the index, resuming, a Ray actor killed mid-run, and the local engine's
shared network process (--device; on the CPU here).

The Ray tests need the cluster extra (pip install -e '.[cluster]'); they are skipped without it.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="facevox batch needs pyarrow: pip install -e '.[batch]'")

from facevox.batch import Options, find_inputs, plan, run  # noqa: E402
from facevox.batch.index import read_index  # noqa: E402
from facevox.batch.store import open_store  # noqa: E402
from photos import BAD, make_photos, sources  # noqa: E402

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install -e '.[cluster]')")
COUNT = 50


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_photos(folder, COUNT)
    return folder


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    """The local engine's run over all the photos: (options, index as {input: row})."""
    keys, problems, root = find_inputs([str(photos)])
    assert len(keys) == COUNT and not problems
    options = Options(out=str(tmp_path_factory.mktemp("local")), root=root)
    pending, clashes, skipped = plan(keys, options)
    assert (len(pending), clashes, skipped) == (COUNT, [], 0)
    processed = [r["input"] for records in run(pending, options, "local", workers=2) for r in records]
    assert sorted(processed) == sorted(keys)
    return options, rows(options.out)


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def rows(out: str) -> dict[str, dict]:
    """The index as {input: row}, asserting that no input appears twice."""
    table = read_index(open_store(out)).to_pylist()
    inputs = [r["input"] for r in table]
    assert len(inputs) == len(set(inputs)), "an input is in the index more than once"
    return {r["input"]: r for r in table}


def assert_same_results(got: dict, want: dict, out: str) -> None:
    """Same inputs, statuses, reasons and files; landmarks within 0.05 px; files present and whole."""
    assert sorted(got) == sorted(want)
    for key, row in want.items():
        other = got[key]
        assert (other["status"], other["reason"], other["outputs"], other["faces"]) == (row["status"], row["reason"], row["outputs"], row["faces"]), key
        if row["faces"]:
            assert np.allclose(np.array(other["landmarks_3d"]), np.array(row["landmarks_3d"]), atol=0.05), key
        for name in other["outputs"]:
            data = (Path(out) / name).read_bytes()
            assert data[:4] == b"glTF" if name.endswith(".glb") else json.loads(data)["landmarks_3d"], name


def wait_for_parts(out: str, count: int = 1, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list((Path(out) / "index").glob("part-*.parquet"))) < count:
        assert time.monotonic() < deadline, "no index part appeared"
        time.sleep(0.05)


@pytest.mark.needs_detector
def test_local_engine_index_and_files(reference, photos):
    options, index = reference
    statuses = {Path(k).relative_to(photos).as_posix(): r["status"] for k, r in index.items()}
    assert {name: statuses[name] for name in BAD} == BAD
    assert all(status == "done" for name, status in statuses.items() if name not in BAD)
    reasons = {Path(k).name: r["reason"] for k, r in index.items() if r["status"] != "done"}
    assert reasons == {"empty.jpg": "empty.jpg: empty file", "grey.jpg": "no face found in the photo",
                       "text.jpg": "text.jpg: not an image (or a format facevox cannot read)",
                       "truncated.jpg": reasons["truncated.jpg"]}
    assert reasons["truncated.jpg"].startswith("truncated.jpg: damaged or truncated image")
    both = index[str(photos / "good/both.jpg")]
    assert both["faces"] == 2 and both["outputs"] == ["good/both.glb", "good/both.json", "good/both_face2.glb", "good/both_face2.json"]
    more = index[str(photos / "good/more/astronaut_0002.jpg")]  # the input tree is mirrored below OUT
    assert more["outputs"] == ["good/more/astronaut_0002.glb", "good/more/astronaut_0002.json"]
    for row in index.values():
        if row["status"] == "done":
            assert row["time_network"] > 0 and row["seconds"] >= row["time_network"] and len(row["landmarks_3d"][0]) == 68
            saved = json.loads((Path(options.out) / row["outputs"][1]).read_bytes())
            assert np.allclose(saved["landmarks_3d"], row["landmarks_3d"][0], atol=0.006)
            assert [saved["pose"][k] for k in ("yaw", "pitch", "roll")] == pytest.approx([row[k][0] for k in ("yaw", "pitch", "roll")], abs=0.006)
    assert_same_results(index, index, options.out)


@pytest.mark.needs_detector
def test_rerun_skips_everything(reference):
    options, index = reference
    parts = sorted((Path(options.out) / "index").iterdir())
    stamps = [p.stat().st_mtime_ns for p in parts]
    pending, clashes, skipped = plan(list(index), options)
    assert (pending, clashes, skipped) == ([], [], COUNT)
    assert list(run(pending, options, "local")) == []
    assert [p.stat().st_mtime_ns for p in sorted((Path(options.out) / "index").iterdir())] == stamps


def subset(reference, photos) -> tuple[list[str], dict]:
    """The 19 inputs in bad/ and good/more/ (folders to name on a command line), and their reference rows."""
    folders = [str(photos / "bad"), str(photos / "good" / "more")]
    want = {k: r for k, r in reference[1].items() if Path(k).parent in (photos / "bad", photos / "good" / "more")}
    assert len(want) == 19
    return folders, want


@pytest.mark.needs_detector
def test_local_interrupted_run_resumes_only_what_is_left(reference, photos, tmp_path):
    """The CLI killed (with its workers) mid-run; the rerun processes exactly the inputs not in the index."""
    folders, want = subset(reference, photos)
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "facevox.cli", "batch", *folders, "-o", out, "--workers", "2", "--batch-size", "4"]
    job = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_parts(out, 2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    before = rows(out)
    assert 0 < len(before) < len(want), "the run was not interrupted mid-way"
    keys, _, root = find_inputs(folders)
    options = Options(out=out, root=root)
    pending, _, skipped = plan(keys, options)
    assert sorted(pending) == sorted(set(keys) - set(before)) and skipped == len(before)
    redone = [r["input"] for records in run(pending, options, "local", workers=2) for r in records]
    assert sorted(redone) == sorted(pending)
    assert_same_results(rows(out), want, out)


@pytest.mark.needs_detector
def test_local_engine_with_a_shared_network_process_matches(reference, photos, tmp_path):
    """--device: the workers' networks are clients of one torch process, fed through shared memory
    (the volume comes back as uint8): the plain local engine's index and files."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    inputs = [str(photos / "bad"), *(str(photos / "good" / name) for name in ("both.jpg", "hopper_0001.jpg"))]
    keys, _, root = find_inputs(inputs)
    assert root == reference[0].root
    options = Options(out=str(tmp_path / "out"), root=root)
    processed = [r["input"] for records in run(plan(keys, options)[0], options, "local", workers=2, batch_size=2, device="cpu")
                 for r in records]
    assert sorted(processed) == sorted(keys)
    assert_same_results(rows(options.out), {k: reference[1][k] for k in keys}, options.out)


@pytest.mark.needs_detector
def test_dead_network_process_stops_the_workers_quickly(reference, photos):
    """A network process killed: the client raises within its timeout, and process_one passes that on
    (the photo is not recorded as failed)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from facevox.batch.network_server import NetworkClient, NetworkServer, NetworkServerError
    from facevox.batch.work import make_reconstructor, process_one
    from facevox.mesh import front_depth
    from facevox.torch_volume import TorchVolumeModel

    options = reference[0]
    crop = np.array(sources()[1].resize((192, 192)))[None]
    with NetworkServer(device="cpu", slots=1, timeout=2.0, volume=True, reserve_core=True) as server:
        if server.facts["core"] is not None:  # 4 cores or more
            assert os.sched_getaffinity(server.process.pid) == {server.facts["core"]}
            assert server.facts["core"] not in server.handle.cores
        client = NetworkClient(server.handle)
        got, want = client(crop)[0], TorchVolumeModel(device="cpu")(crop)[0]
        assert np.abs(got.volume - want.volume).max() <= 0.5 / 255 + 1e-6
        (depth, mask), (want_depth, want_mask) = got.front, front_depth(want.volume)
        assert mask.sum() > 1000 and np.array_equal(mask, want_mask)
        assert np.abs(depth[mask] - want_depth[mask]).max() < 1e-3  # voxels
        assert got.heatmaps is None and np.array_equal(got.landmarks(192), want.landmarks(192).astype(np.float32))
        first, want_first = client(crop, surface=False)[0], TorchVolumeModel(device="cpu")(crop, surface=False)[0]
        assert (first.volume, first.front) == (None, None)
        assert np.abs(first.landmarks(192) - want_first.landmarks(192)).max() < 1e-3
        server.process.kill()
        server.process.join()
        start = time.monotonic()
        with pytest.raises(NetworkServerError, match="has not answered"):
            process_one(make_reconstructor(options, network=client), open_store(options.out), options, str(photos / "good/both.jpg"))
        assert time.monotonic() - start < 5


def test_server_batch_step_mixes_full_and_landmarks_only_slots():
    """answer: one batch of slots that want the surface and slots that want only the landmarks; each gets
    the outputs it asked for, those of the torch network alone; the others' rows are left as they were."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from facevox.batch.network_server import answer, block_size, slot_arrays, staging
    from facevox.torch_volume import TorchVolumeModel, front_depth

    model = TorchVolumeModel(device="cpu")
    crops = np.stack([np.asarray(photo.resize((192, 192))) for photo in sources()] * 2)[:3]
    arrays = slot_arrays(np.zeros(block_size(model.info, 4, True), np.uint8), model.info, 4, True)
    arrays["crops"][1:] = crops
    arrays["surface"][1:] = [False, True, True]
    for name in ("front", "mask", "volume"):
        arrays[name][:] = 7
    answer(model, arrays, [3, 1, 2], staging(model.info, 4, True, "cpu"))
    want = model(crops)
    for slot, output in zip((1, 2, 3), [model(crops[:1], surface=False)[0], *want[1:]]):
        assert np.abs(arrays["points"][slot] - output.landmarks(192)).max() < 1e-4
    volume = np.stack([want[1].volume, want[2].volume])
    depth, mask = (t.numpy() for t in front_depth(torch.from_numpy(volume)))
    assert np.array_equal(arrays["mask"][2:], mask) and np.allclose(arrays["front"][2:][mask], depth[mask], atol=1e-4)
    assert np.abs(arrays["volume"][2:].astype(int) - np.round(volume * 255)).max() <= 1
    assert (arrays["front"][:2] == 7).all() and (arrays["volume"][:2] == 7).all() and (arrays["points"][0] == 0).all()


def test_split_cores(monkeypatch):
    from facevox.batch.network_server import split_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert split_cores() is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2, 10)), raising=False)
    core, cores = split_cores()
    assert core == 9 and 9 not in cores and set(cores) <= set(range(2, 9)) and len(cores) >= 6


def test_default_device_workers_fit_in_memory():
    from facevox.batch.local import DEVICE_WORKERS_PER_CORE, WORKER_MEMORY, available_memory, default_device_workers

    assert default_device_workers(16, available=128 * 2**30) == 16 * DEVICE_WORKERS_PER_CORE
    assert default_device_workers(8, available=40 * WORKER_MEMORY) == 20  # half the memory for the workers
    assert default_device_workers(8, available=2**30) == 8  # one a core at least
    assert available_memory() is None or available_memory() > 0


@pytest.mark.needs_detector
def test_output_url_and_cli(photos, tmp_path):
    """OUT as a file:// URL, through the CLI, head and surface (--mesh both); a missing input is reported
    (exit 1), the rest processed."""
    from typer.testing import CliRunner

    from facevox.cli import app

    out = tmp_path / "out"
    inputs = [str(photos / "good" / "hopper_0001.jpg"), str(photos / "bad" / "*.jpg"), str(tmp_path / "missing.jpg")]
    result = CliRunner().invoke(app, ["batch", *inputs, "-o", out.as_uri(), "--format", "ply,json", "--workers", "1", "--mesh", "both"])
    assert result.exit_code == 1, result.output
    assert "done 1, no face 1, failed 3 (already in the index: 0)" in result.output
    index = rows(out.as_uri())
    row = index[str(photos / "good/hopper_0001.jpg")]
    assert len(index) == 5 and row["outputs"] == ["good/hopper_0001.ply", "good/hopper_0001.json", "good/hopper_0001.surface.ply"]
    assert row["time_head"] > 0
    assert (out / "good" / "hopper_0001.ply").read_bytes().startswith(b"ply")
    assert "head" in json.loads((out / "good" / "hopper_0001.json").read_text())
    assert not Options(out="x", root="x", formats=("stl",)).solid and Options(out="x", root="x", formats=("stl",), mesh="both").solid


def test_fsspec_store_round_trip():
    """A scheme pyarrow lacks goes through fsspec (its in-memory filesystem here: one process only)."""
    pytest.importorskip("fsspec")
    from facevox.batch.index import new_record, recorded_inputs, write_part
    from facevox.batch.store import write_bytes

    store = open_store("memory://facevox-test/out")
    assert not store.local and recorded_inputs(store) == set()
    write_bytes(store, "a/b.json", b"{}")
    write_part(store, [new_record("/x/1.jpg"), new_record("/x/2.jpg", "failed", "why")])
    write_part(store, [new_record("/x/1.jpg"), new_record("/x/2.jpg", "failed", "why")])  # the same step redone
    assert recorded_inputs(store) == {"/x/1.jpg", "/x/2.jpg"} and read_index(store).num_rows == 2
    with store.fs.open_input_stream(store.path("a/b.json")) as stream:
        assert stream.read() == b"{}"


def test_output_name_clash_is_recorded(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("face.jpg", "face.png"):
        (tmp_path / "in" / name).write_bytes(b"")
    keys, _, root = find_inputs([str(tmp_path / "in")])
    pending, clashes, _ = plan(keys, Options(out=str(tmp_path / "out"), root=root))
    assert pending == [str(tmp_path / "in" / "face.jpg")]
    assert [(r["input"], r["status"]) for r in clashes] == [(str(tmp_path / "in" / "face.png"), "failed")]
    assert set(rows(str(tmp_path / "out"))) == {str(tmp_path / "in" / "face.png")}


def test_import_facevox_does_not_import_ray():
    code = "import sys, facevox, facevox.cli, facevox.batch; sys.exit('ray' in sys.modules or 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.needs_detector
@needs_ray
def test_ray_engine_with_an_actor_killed_matches_local(reference, ray_cluster, photos, tmp_path):
    """ray.kill of one actor mid-run: Ray restarts it and redoes its batch; every input ends in the index
    exactly once, with the local engine's results."""
    options, want = reference
    options = Options(out=str(tmp_path / "out"), root=options.root)
    killed = []

    def kill_one_actor():  # once both actors have written a part, so that a new process must finish the job
        while len({r["worker"] for r in read_index(open_store(options.out), ["worker"]).to_pylist()}) < 2:
            time.sleep(0.05)
        actors = [h for h in gc.get_objects() if isinstance(h, ray.actor.ActorHandle) and "MapWorker" in repr(h)]
        ray.kill(actors[0], no_restart=False)
        killed.append(actors[0])

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    pending, _, _ = plan(list(want), options)
    processed = [r["input"] for records in run(pending, options, "ray", workers=2, batch_size=4) for r in records]
    killer.join(1)
    assert killed, "no actor was killed"
    assert sorted(processed) == sorted(want)
    got = rows(options.out)
    assert len({r["worker"] for r in got.values() if r["worker"]}) >= 3, "the killed actor was not replaced mid-run"
    assert_same_results(got, want, options.out)


@pytest.mark.needs_detector
@needs_ray
def test_ray_interrupted_run_resumes_only_what_is_left(reference, ray_cluster, photos, tmp_path):
    folders, want = subset(reference, photos)
    keys, _, root = find_inputs(folders)
    assert root == reference[0].root
    options = Options(out=str(tmp_path / "out"), root=root)
    steps = run(plan(keys, options)[0], options, "ray", workers=2, batch_size=4)
    next(steps)
    steps.close()  # the driver stops: Ray Data shuts its actors down
    before = {}
    while before != (before := rows(options.out)):  # until no stopping actor adds a part any more
        time.sleep(2)
    assert 0 < len(before) < len(want), "the run was not interrupted mid-way"
    pending, _, skipped = plan(keys, options)
    assert sorted(pending) == sorted(set(keys) - set(before)) and skipped == len(before)
    redone = [r["input"] for records in run(pending, options, "ray", workers=2, batch_size=4) for r in records]
    assert sorted(redone) == sorted(pending)
    assert_same_results(rows(options.out), want, options.out)


@pytest.mark.needs_detector
@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=needs_ray)])
def test_input_gone_before_it_is_read_is_recorded(engine, request, photos, tmp_path):
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "in" / name).write_bytes((photos / "bad" / "grey.jpg").read_bytes())
    keys, _, root = find_inputs([str(tmp_path / "in")])
    (tmp_path / "in" / "b.jpg").unlink()
    options = Options(out=str(tmp_path / "out"), root=root)
    list(run(plan(keys, options)[0], options, engine, workers=1))
    index = rows(options.out)
    assert {Path(k).name: (r["status"], r["reason"]) for k, r in index.items()} == {
        "a.jpg": ("no face", "no face found in the photo"), "b.jpg": ("failed", f"{tmp_path / 'in' / 'b.jpg'}: no such file")}


def test_local_workers_start_with_one_library_thread(monkeypatch):
    from facevox.batch.local import one_thread_libraries

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the user's own setting stays
    with one_thread_libraries():
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'], "
                                "os.environ['MKL_NUM_THREADS'], os.environ['OPENCV_FOR_THREADS_NUM'])"], capture_output=True, text=True, check=True)
        assert child.stdout.split() == ["1", "1", "3", "1"]
    assert "OMP_NUM_THREADS" not in os.environ and "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"
