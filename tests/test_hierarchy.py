"""The hierarchical model at run time (facevox.hierarchy): numpy between the ONNX levels, the surface
from the blocks, and the pipeline with a small untrained hierarchical model."""

import numpy as np
import pytest

from facevox.hierarchy import Hierarchy, HierarchicalModel, Level

SIZE, GRIDS = 64, [16, 32, 64, 128]  # a 64-pixel crop: levels of 4, 2, 1 and 0.5 crop pixels


def plane(depth: float, level: int, k0: int, count: int, side: int = 16) -> np.ndarray:
    """Occupancy (count, side, side) of a flat face at `depth` crop pixels, for voxels k0... of a level."""
    h = SIZE / GRIDS[level]
    centres = (np.arange(k0, k0 + count) + 0.5) * h - 0.5
    ramp = np.clip((centres + h / 2 - depth) / h, 0, 1).astype(np.float32)
    return np.broadcast_to(ramp[:, None, None], (count, side, side)).copy()


def blocks(origins, probabilities) -> Level:
    return Level(np.array(origins, np.int64).reshape(-1, 3), np.array(probabilities, np.float32).reshape(-1, 17, 16, 16))


@pytest.fixture
def planted() -> Hierarchy:
    """A face at depth 20.3 in the prior; two finest blocks (rows 0-15, columns 0-31) find it at 20.8;
    a third (rows and columns 32-47) finds nothing where the prior put the face."""
    prior = plane(20.3, 1, 0, 32, side=32)
    finest = [plane(20.8, 3, 31, 17), plane(20.8, 3, 31, 17), np.zeros((17, 16, 16))]
    empty = blocks(np.zeros((0, 3)), np.zeros((0, 17, 16, 16)))
    return Hierarchy(SIZE, GRIDS, prior, [empty, empty, blocks([[32, 0, 0], [32, 0, 16], [32, 32, 32]], finest)])


def test_front_depth_takes_the_finest_blocks_where_they_are(planted):
    depth, mask = planted.fine_front_depth()
    assert depth.shape == (128, 128)
    # Within a tenth of a voxel of each level (0.5 and 2 crop pixels): linear interpolation on clipped ramps.
    assert np.allclose(depth[:16, :32], 20.8, atol=0.05)
    assert np.allclose(depth[16:32], 20.3, atol=0.2) and np.allclose(depth[:16, 48:], 20.3, atol=0.2)
    assert np.ptp(depth[:16, :32]) < 1e-9 and np.abs(depth[:16, :32] - 20.8).max() < np.abs(depth[20, 20] - 20.3) / 2
    assert not mask[32:48, 32:48].any() and mask[:32].all()  # the empty block took its columns off the face
    crop_depth, crop_mask = planted.front_depth()  # on the crop's pixels: 2×2 finer pixels each
    assert crop_depth.shape == (64, 64) and np.allclose(crop_depth[:8, :16], 20.8, atol=0.05)
    assert not crop_mask[16:24, 16:24].any() and crop_mask[:16].all()


def test_volume_writes_each_level_over_the_prior(planted):
    fine = planted.volume(3)
    assert fine.shape == (128,) * 3
    assert np.array_equal(fine[32:48, :16, :16], plane(20.8, 3, 32, 16))
    assert (fine[32:48, 32:48, 32:48] == 0).all()
    assert np.array_equal(fine[:, 64, 64], np.repeat(planted.prior[:, 16, 16], 4))  # unrefined: the prior
    coarse = planted.volume(1)  # finer blocks averaged down
    assert np.allclose(coarse[8:12, :4, :4], plane(20.8, 3, 32, 16).reshape(4, 4, 4, 4, 4, 4).mean(axis=(1, 3, 5)))
    assert planted.voxels() == [16**3, 0, 0, 3 * 16**3]


def test_marching_cubes_on_the_finest_blocks_alone(planted):
    mesh = planted.boundary_mesh()
    x, y, k = mesh.vertices.T
    assert len(mesh.triangles) > 500
    assert x.min() >= -0.5 and x.max() <= 24 and y.max() <= 24  # crop pixels: only where the blocks are
    planted_face = (x < 15) & (y < 7)
    assert planted_face.sum() > 200 and np.abs(k[planted_face] - 20.8).max() < 0.05
    assert not ((x > 17) & (x < 22) & (y > 17) & (y < 22)).any()  # the empty block: no surface inside it


def test_choice_keeps_the_highest_scores_within_the_limit():
    model = HierarchicalModel.__new__(HierarchicalModel)
    model.threshold, model.max_blocks = 0.5, [3, 1]
    scores = np.array([[0.9, 0.1, 0.6, 0.7], [0.55, 0.95, 0.2, 0.8]])
    assert model._choose(scores, faces=2, level=1).tolist() == [0, 2, 3, 4, 5, 7]  # all six above 0.5: the limit is 6
    assert model._choose(scores, faces=1, level=1).tolist() == [0, 5, 7]  # limit 3: the three highest
    assert model._choose(scores, faces=1, level=3).tolist() == [5]  # deeper levels take the last limit


@pytest.fixture(scope="module")
def bench_model(tmp_path_factory, surrey):
    """An untrained hierarchical model for 192-pixel crops, exported, for the benches' end-to-end runs."""
    torch = pytest.importorskip("torch", reason="the bench needs the [train] extra (torch)")
    from facevox.net import NetConfig, build
    from training.export_onnx import export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench-hsp") / "bench-hsp.onnx"
    export(build(NetConfig(stacks=1, width=32, hsp_levels=4, hsp_channels=4)).eval(), path, {"name": "bench-hsp"})
    return path


def test_runtime_matches_the_torch_network(tiny_hsp_model):
    import torch

    net, path = tiny_hsp_model
    crops = (np.random.default_rng(0).random((2, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        _, expected = net.hierarchy(net.trunk(torch.from_numpy(crops.transpose(0, 3, 1, 2) / np.float32(255))), threshold=-1.0)
    outputs = HierarchicalModel(path, mirror=False, threshold=-1.0)(crops)  # every octant refined
    for number, level in enumerate(expected, start=1):
        for face, output in enumerate(outputs):
            mine = (level.sample == face).numpy()
            origin = level.origin.numpy()[mine]
            got = output.hierarchy.levels[number - 1]
            order, got_order = np.lexsort(origin.T[::-1]), np.lexsort(got.origin.T[::-1])
            assert np.array_equal(origin[order], got.origin[got_order])
            occupancy = level.occupancy[:, 0] if level.classes is None else level.occupancy[:, 0, 1:18, 2:18, 2:18]
            probability = torch.sigmoid(occupancy).numpy()[mine]
            assert np.abs(probability[order] - got.probability[got_order]).max() < 1e-5
    assert [len(level.origin) for level in outputs[0].hierarchy.levels] == [8, 64, 512]
    depth, mask = outputs[0].front
    assert depth.shape == (SIZE, SIZE) and mask.dtype == bool and outputs[0].volume is None


def test_runtime_runs_without_torch(tiny_hsp_model):
    import subprocess
    import sys

    _, path = tiny_hsp_model
    code = ("import sys, numpy as np; from facevox.volume import load_network; "
            f"out = load_network({str(path)!r})(np.zeros((1, {SIZE}, {SIZE}, 3), np.uint8))[0]; "
            "assert out.front[0].shape == ({SIZE}, {SIZE}) and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code.replace("{SIZE}", str(SIZE))], check=True)


@pytest.mark.needs_detector
def test_pipeline_runs_on_a_hierarchical_model(tiny_hsp_model):
    from skimage import data

    import facevox
    from facevox.volume import load_network

    _, path = tiny_hsp_model
    assert isinstance(load_network(path), HierarchicalModel)
    settings = facevox.Settings(mesh="surface", refine=False, min_evidence=0.0, solid=True)
    face = facevox.Reconstructor(path, settings=settings)(data.astronaut())[0]
    assert len(face.mesh.vertices) > 100 and len(face.mesh.triangles) > 100
    assert face.landmarks_3d.shape == (68, 3) and len(face.extras["solid"].triangles) > 0
    assert len(facevox.export(face, "glb")) > 1000


def test_bench_compares_the_two_models(tmp_path, bench_model):
    """bench/hsp.py end to end on two renders, with an untrained hierarchical model for 192-pixel crops."""
    import json

    from bench import hsp as bench

    path = bench_model
    out = tmp_path / "hsp.json"
    bench.main(["--count", "2", "--batch-size", "2", "--timing-faces", "1", "--photos", "", "--hsp-model", str(path), "--out", str(out)])
    result = json.loads(out.read_text())
    dense, hsp = result["results"]["dense"], result["results"]["hsp"]
    assert 0.5 < dense["iou_own"] <= 1 and 0 <= hsp["iou_own"] <= 1 and 0 <= hsp["iou_common"] <= 1
    assert dense["voxels"] == 200 * 192 * 192 and hsp["voxels"][0] == 48**3 and len(hsp["blocks"]) == 3
    assert all(result["cpu"][m]["cpu_s_per_face"] > 0 and result["cpu"][m]["peak_rss_mb"] > 50 for m in ("dense", "hsp"))
    assert not any(result["cpu"][m]["torch_loaded"] for m in ("dense", "hsp"))  # the runtime's memory alone
    floors = result["results"]
    assert floors["truth_floor"]["dense_error"] < floors["hsp_floor"]["dense_error_fine"] + 0.001 < dense["dense_error"]


def test_forced_blocks_take_the_place_of_the_heads_choice(tiny_hsp_model):
    _, path = tiny_hsp_model
    crops = (np.random.default_rng(1).random((1, SIZE, SIZE, 3)) * 255).astype(np.uint8)
    every = HierarchicalModel(path, mirror=False, threshold=-1.0)(crops)[0].hierarchy  # all octants refined
    level1 = every.levels[0].origin[[1, 6]]
    children = 2 * (level1[:, None] + 8 * np.array([[0, 0, 0], [1, 0, 1]])).reshape(-1, 3)
    orphan = 2 * (every.levels[0].origin[0] + 8)  # a child of a block left unrefined: left out
    level2 = np.concatenate([children[:3], orphan[None]])
    level3 = 2 * (level2[:2] + np.array([[0, 8, 0], [8, 8, 8]]))
    forced = HierarchicalModel(path, mirror=False)(crops, blocks=[[level1, level2, level3]])[0].hierarchy
    for number, (got, wanted) in enumerate(zip(forced.levels, [level1, level2[:3], level3])):
        assert np.array_equal(np.sort(got.origin, 0), np.sort(wanted, 0))
        same = [np.flatnonzero((every.levels[number].origin == o).all(1))[0] for o in got.origin]
        assert np.array_equal(got.probability, every.levels[number].probability[same])  # the same code path's numbers


def test_widened_blocks_keep_the_true_ones_and_stay_under_refined_parents():
    pytest.importorskip("torch", reason="the bench needs the [train] extra (torch)")
    from bench.hsp_cpu import widen

    truth = [np.array([[16, 16, 0]]), np.array([[32, 32, 0], [48, 32, 16]]), np.array([[64, 64, 0], [96, 64, 32]])]
    assert all(np.array_equal(a, b) for a, b in zip(widen(truth, GRIDS, 1.0), truth))
    wide = widen(truth, GRIDS, 2.0)
    assert [len(level) for level in wide] == [2, 4, 4]
    for level, (chosen, true) in enumerate(zip(wide, truth)):
        assert {tuple(o) for o in true} <= {tuple(o) for o in chosen}
        if level:
            parents = {tuple(p) for p in wide[level - 1]}
            assert all(tuple(o // 2 // 16 * 16) in parents for o in chosen)  # a child of a refined block
    assert wide[0][1].tolist() == [0, 0, 0]  # the nearest others first (all 7 at one block's distance: raster order)


def test_cpu_bench_times_the_oracles_blocks(tmp_path, bench_model):
    """bench/hsp_cpu.py end to end on two renders, with an untrained hierarchical model for 192-pixel crops."""
    import json

    from bench import hsp_cpu

    path = bench_model
    out = tmp_path / "hsp_cpu.json"
    hsp_cpu.main(["--faces", "1", "--scales", "1,2", "--rounds", "2", "--photos", "", "--hsp-model", str(path), "--out", str(out)])
    result = json.loads(out.read_text())
    oracle = result["settings"]["oracle_blocks_per_face"]
    assert len(oracle) == 3 and oracle[2] > oracle[1] > oracle[0] > 0
    assert result["hsp"]["1x"]["blocks"] == oracle  # the runtime refined exactly the oracle's blocks
    assert result["hsp"]["2x"]["blocks"] == [2 * count for count in oracle]
    parts = result["hsp"]["1x"]["parts"]
    assert set(parts) == {"trunk", "level1", "level2", "level3", "numpy", "surface"} and min(parts.values()) > 0
    assert set(result["dense"]["parts"]) == {"network", "numpy", "surface"} and len(result["dense"]["cpu_s_per_face_runs"]) == 2
    assert result["dense"]["cpu_s_per_face"] > 0 and result["dense_no_mirror"]["cpu_s_per_face"] > 0


def test_crops_are_the_slices_they_stand_for():
    from facevox.hierarchy import crop2d, crop3d, crop3d_children

    torch = pytest.importorskip("torch", reason="the children's layout comes from facevox.hsp_net (torch)")
    from facevox.hsp_net import to_children

    rng = np.random.default_rng(0)
    volume = rng.random((3, 4, 20, 20, 20)).astype(np.float32)
    maps = rng.random((3, 4, 30, 30)).astype(np.float32)
    which = rng.integers(0, 3, 40)
    apart = to_children(torch.from_numpy(volume), 10, 10, 10).numpy()
    for start in (rng.integers(0, 9, (40, 3)), 8 * rng.integers(0, 2, (40, 3)) + 1):  # mixed parities, then one
        expected = np.stack([volume[w, :, k : k + 9, y : y + 8, x : x + 7] for w, (k, y, x) in zip(which, start)])
        assert np.array_equal(crop3d(volume, which, start, (9, 8, 7)), expected)
        assert np.array_equal(crop3d_children(apart, which, start, (9, 8, 7)), expected)
    start = rng.integers(0, 10, (40, 2))
    assert np.array_equal(crop2d(maps, which, start, (16, 12)), np.stack([maps[w, :, y : y + 16, x : x + 12] for w, (y, x) in zip(which, start)]))
