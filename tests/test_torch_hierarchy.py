"""A hierarchical model on torch (facevox.torch_volume.TorchHierarchicalModel, the GPU batch path) against
the onnxruntime runtime (facevox.hierarchy), on the CPU, with a small untrained model exported here."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch network needs torch: pip install -e '.[gpu]'")
pytest.importorskip("onnx", reason="the torch network reads the ONNX weights with onnx: pip install -e '.[gpu]'")

from facevox.hierarchy import HierarchicalModel  # noqa: E402
from facevox.torch_volume import TorchHierarchicalModel, TorchVolumeModel, torch_network  # noqa: E402
from photos import sources  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def tiny_model(tiny_hsp_model):
    """The exported path of conftest's untrained hierarchical model for 64-pixel crops."""
    return tiny_hsp_model[1]


@pytest.fixture(scope="module")
def crops():
    noise = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    return np.concatenate([noise, np.stack([np.asarray(photo.resize((SIZE, SIZE))) for photo in sources()[:2]])])


def assert_same_faces(got, want, probability_tolerance=1e-4):
    """Per face: the same blocks at every level, their occupancy, the front depth and the landmarks."""
    for g, w in zip(got, want):
        assert [len(level.origin) for level in g.hierarchy.levels] == [len(level.origin) for level in w.hierarchy.levels]
        for mine, theirs in zip(g.hierarchy.levels, w.hierarchy.levels):
            assert np.array_equal(mine.origin, theirs.origin)  # both in the order the octants come
            assert mine.probability.shape == theirs.probability.shape
            assert np.abs(mine.probability - theirs.probability).max(initial=0) < probability_tolerance
        assert np.abs(g.hierarchy.prior - w.hierarchy.prior).max() < 1e-5
        (depth, mask), (want_depth, want_mask) = g.front, w.front
        assert depth.shape == (SIZE, SIZE) and np.array_equal(mask, want_mask) and mask.any()
        assert np.abs(depth[mask] - want_depth[mask]).max() < 1e-3 and np.isinf(depth[~mask]).all()  # crop pixels
        assert np.abs(g.landmarks(SIZE) - w.landmarks(SIZE)).max() < 1e-2
        assert np.abs(g.dense_volume() - w.dense_volume()).max() < 1e-4


@pytest.mark.parametrize("threshold, max_blocks", [(None, None), (0.3, None), (-1.0, [5, 12, 40])])
def test_same_outputs_as_onnxruntime(tiny_model, crops, threshold, max_blocks):
    """The model's threshold (every octant of this untrained head is above it), one that stops refinement
    after level 1, and every octant a candidate with each level's cap binding (the highest scores kept)."""
    runtimes = [HierarchicalModel(tiny_model, threshold=threshold), torch_network(tiny_model, device="cpu")]
    assert isinstance(runtimes[1], TorchHierarchicalModel)
    if threshold is not None:
        runtimes[1].threshold = threshold
    if max_blocks:
        for runtime in runtimes:
            runtime.max_blocks = max_blocks
    want, got = (runtime(crops) for runtime in runtimes)
    assert_same_faces(got, want)
    counts = [sum(len(o.hierarchy.levels[level].origin) for o in got) for level in range(3)]
    assert counts == {None: [32, 256, 2048], 0.3: [32, 0, 0], -1.0: [20, 48, 160]}[threshold]
    assert got[0].volume is None and got[0].heatmaps.shape == want[0].heatmaps.shape


def test_device_choice_is_the_runtimes(tiny_model):
    """Random scores with ties, limit binding or not, at several levels."""
    model = TorchHierarchicalModel(tiny_model, device="cpu")
    cpu = HierarchicalModel.__new__(HierarchicalModel)
    rng = np.random.default_rng(3)
    for faces, threshold, max_blocks in [(2, 0.5, [3, 1]), (3, 0.2, [40, 30]), (1, 0.9, [100, 100])]:
        scores = np.round(rng.random((faces, 4, 4, 4)), 2).astype(np.float32)  # ties
        for runtime in (model, cpu):
            runtime.threshold, runtime.max_blocks = threshold, max_blocks
        for level in (1, 2, 3):
            want = cpu._choose(scores, faces, level)
            assert model._choose(torch.from_numpy(scores), faces, level).numpy().tolist() == want.tolist()


def test_batched_faces_are_the_faces_one_at_a_time(tiny_model, crops):
    model = TorchHierarchicalModel(tiny_model, device="cpu")
    together = model(crops)
    alone = [model(crop)[0] for crop in crops]
    assert_same_faces(together, alone, probability_tolerance=1e-5)


def test_landmarks_only_and_per_row_surfaces(tiny_model, crops):
    """surface=False: the landmarks alone; forward's hierarchy covers only the rows that want it."""
    model = TorchHierarchicalModel(tiny_model, device="cpu")
    full = model(crops[:2])
    for got, want in zip(model(crops[:2], surface=False), TorchHierarchicalModel(tiny_model, device="cpu", mirror=False)(crops[:2])):
        assert (got.volume, got.heatmaps, got.front, got.hierarchy) == (None, None, None, None)
        assert np.abs(got.landmarks(SIZE) - want.landmarks(SIZE)).max() < 1e-3
    with torch.inference_mode():
        tree, heatmaps, _ = model.forward(crops[:2], np.array([False, True]))
        depth, mask = model.front_depth(tree)
        assert model.forward(crops[:2], False)[0] is None
    assert len(tree.prior) == 1 and np.array_equal(mask[0].numpy(), full[1].front[1])
    assert np.allclose(depth[0].numpy()[mask[0].numpy()], full[1].front[0][full[1].front[1]], atol=1e-4)
    assert np.abs(heatmaps[1].numpy() - full[1].heatmaps).max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_matches_cpu(tiny_model, crops, precision):
    """On a GPU (not run here: written without one): the same blocks as on the CPU (this head refines
    every octant, far below the caps) and nearly the same surface (TF32 or fp16 arithmetic)."""
    want = TorchHierarchicalModel(tiny_model, device="cpu")(crops)
    got = TorchHierarchicalModel(tiny_model, device="cuda", precision=precision)(crops)
    for g, w in zip(got, want):
        assert [len(level.origin) for level in g.hierarchy.levels] == [len(level.origin) for level in w.hierarchy.levels]
        both = g.front[1] & w.front[1]
        assert both.sum() >= 0.99 * w.front[1].sum() and np.median(np.abs(g.front[0][both] - w.front[0][both])) < 0.05


def test_dense_class_refuses_a_hierarchical_model(tiny_model):
    with pytest.raises(ValueError, match="hierarchical"):
        TorchVolumeModel(tiny_model, device="cpu")


def test_server_batch_step_on_a_hierarchical_model(tiny_model, crops):
    """answer (the network process of `facevox batch --device`): the front depth and the solid's volume of
    a hierarchical model, made on the device, are its TorchHierarchicalModel outputs'."""
    from facevox.batch.network_server import answer, block_size, slot_arrays, staging

    model = torch_network(tiny_model, device="cpu")
    arrays = slot_arrays(np.zeros(block_size(model.info, 4, True), np.uint8), model.info, 4, True)
    assert arrays["volume"].shape == (4, SIZE, SIZE, SIZE)  # level 2, the crop's grid
    arrays["crops"][:] = crops
    arrays["surface"][:] = [True, False, True, True]
    answer(model, arrays, [0, 1, 2, 3], staging(model.info, 4, True, "cpu"))
    want = model(crops)
    for slot in (0, 2, 3):
        depth, mask = want[slot].front
        assert np.array_equal(arrays["mask"][slot], mask) and np.allclose(arrays["front"][slot][mask], depth[mask], atol=1e-4)
        assert np.abs(arrays["volume"][slot].astype(int) - np.round(want[slot].dense_volume() * 255)).max() <= 1
        assert np.abs(arrays["points"][slot] - want[slot].landmarks(SIZE)).max() < 1e-4
    assert not arrays["mask"][1].any() and (arrays["volume"][1] == 0).all()


@pytest.mark.needs_detector
def test_batch_with_a_shared_network_process_runs_a_hierarchical_model(tiny_model, tmp_path):
    """`facevox batch --device cpu` (the shared network process) and a Reconstructor with the torch network
    in it (Ray's --gpus-per-worker) on a hierarchical model, solid included, against the onnxruntime
    runtime's reconstruction of the same photo."""
    import facevox
    from facevox.batch.network_server import NetworkClient, NetworkServer

    photo = np.asarray(sources()[1])
    settings = facevox.Settings(mesh="surface", refine=False, min_evidence=0.0, solid=True)
    want = facevox.Reconstructor(tiny_model, settings=settings)(photo)
    with NetworkServer(tiny_model, device="cpu", slots=1, volume=True) as server:
        shared = facevox.Reconstructor(tiny_model, settings=settings, network=NetworkClient(server.handle))(photo)
    within = facevox.Reconstructor(tiny_model, settings=settings, network=torch_network(tiny_model, device="cpu"))(photo)
    for got in (shared, within):
        assert len(got) == len(want) >= 1
        assert np.abs(got[0].landmarks_3d - want[0].landmarks_3d).max() < 0.05
        for mesh, want_mesh in [(got[0].mesh, want[0].mesh), (got[0].extras["solid"], want[0].extras["solid"])]:
            assert len(mesh.triangles) > 100 and abs(len(mesh.vertices) - len(want_mesh.vertices)) <= 0.01 * len(want_mesh.vertices)


def test_device_front_depth_and_volume_are_the_hierarchys():
    """TorchHierarchy's front depth and volumes against facevox.hierarchy.Hierarchy's on two planted faces:
    test_hierarchy's (finest blocks that find the face, and one that finds nothing where the prior had
    it), and one with blocks at every level."""
    from test_hierarchy import GRIDS, SIZE as PLANTED_SIZE, blocks, plane

    from facevox.hierarchy import Hierarchy
    from facevox.torch_volume import TorchHierarchy

    empty = blocks(np.zeros((0, 3)), np.zeros((0, 17, 16, 16)))
    first = Hierarchy(PLANTED_SIZE, GRIDS, plane(20.3, 1, 0, 32, side=32),
                      [empty, empty, blocks([[32, 0, 0], [32, 0, 16], [32, 32, 32]], [plane(20.8, 3, 31, 17)] * 2 + [np.zeros((17, 16, 16))])])
    second = Hierarchy(PLANTED_SIZE, GRIDS, plane(30.1, 1, 0, 32, side=32),
                       [blocks([[0, 16, 16]], [plane(29.0, 1, -1, 17)]), blocks([[16, 32, 32]], [plane(29.6, 2, 15, 17)]),
                        blocks([[48, 64, 64], [48, 0, 112]], [plane(29.9, 3, 47, 17), np.zeros((17, 16, 16))])])
    trees = [first, second]
    levels = []
    for number in range(3):
        parts = [tree.levels[number] for tree in trees]
        sample = np.concatenate([np.full(len(part.origin), face) for face, part in enumerate(parts)])
        levels.append(tuple(torch.from_numpy(a) for a in (sample, np.concatenate([p.origin for p in parts]),
                                                          np.concatenate([p.probability for p in parts]))))
    device = TorchHierarchy(PLANTED_SIZE, GRIDS, torch.from_numpy(np.stack([t.prior for t in trees]).astype(np.float32)), levels)
    depth, mask = device.front_depth()
    for face, tree in enumerate(trees):
        want_depth, want_mask = tree.front_depth()
        assert np.array_equal(mask[face].numpy(), want_mask) and not want_mask.all()
        assert np.allclose(depth[face].numpy()[want_mask], want_depth[want_mask], atol=1e-4) and np.isinf(depth[face].numpy()[~want_mask]).all()
        for level in (1, 2, 3):
            assert np.allclose(device.volume(level)[face].numpy(), tree.volume(level), atol=1e-6)
    assert [len(level.origin) for level in device.trees()[1].levels] == [1, 1, 2]
