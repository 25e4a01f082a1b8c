"""The torch network (the GPU paths of `facevox batch`: --device, --gpus-per-worker) against onnxruntime, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch network needs torch: pip install -e '.[gpu]'")
pytest.importorskip("onnx", reason="the torch network reads the ONNX weights with onnx: pip install -e '.[gpu]'")

import facevox  # noqa: E402
from facevox.torch_volume import TorchVolumeModel, default_precision  # noqa: E402
from facevox.volume import VolumeModel  # noqa: E402
from photos import sources  # noqa: E402


@pytest.fixture(scope="module")
def torch_cpu():
    return TorchVolumeModel(device="cpu")


def test_same_outputs_as_onnxruntime(torch_cpu):
    rng = np.random.default_rng(0)
    crops = np.concatenate([rng.integers(0, 256, (1, 192, 192, 3), dtype=np.uint8),
                            np.asarray(sources()[1].resize((192, 192)))[None]])
    for want, got in zip(VolumeModel()(crops), torch_cpu(crops)):
        assert got.volume.shape == want.volume.shape and got.heatmaps.shape == want.heatmaps.shape
        assert np.abs(got.volume - want.volume).max() < 1e-4
        assert np.abs(got.heatmaps - want.heatmaps).max() < 1e-4
        assert np.abs(got.landmark_depth - want.landmark_depth).max() < 1e-2  # depths are in voxels (0-200)
        assert np.abs(got.landmarks(192) - want.landmarks(192)).max() < 1e-2


def test_number_format_defaults_to_fp16_on_cuda_only(torch_cpu):
    assert [default_precision(d) for d in ("cuda", "cuda:1", "cpu")] == ["fp16", "fp16", "fp32"]
    assert torch_cpu.precision == "fp32" and torch_cpu.dtype == torch.float32
    with pytest.raises(ValueError, match="fp8"):
        TorchVolumeModel(device="cpu", precision="fp8")


def test_landmarks_only_and_per_row_volumes(torch_cpu):
    """surface=False: the landmarks alone; forward's volume covers only the rows that want it."""
    crops = np.stack([np.asarray(photo.resize((192, 192))) for photo in sources()[:2]])
    full, alone = torch_cpu(crops), TorchVolumeModel(device="cpu", mirror=False)(crops)
    for got, want in zip(torch_cpu(crops, surface=False), alone):  # the landmarks-only pass sees the crop alone
        assert (got.volume, got.heatmaps, got.front) == (None, None, None)
        assert np.abs(got.landmarks(192) - want.landmarks(192)).max() < 1e-3
    assert [o.volume for o in VolumeModel()(crops[:1], surface=False)] == [None]
    with torch.inference_mode():
        volume, heatmaps, _ = torch_cpu.forward(crops, np.array([False, True]))
        assert torch_cpu.forward(crops, False)[0] is None
    assert volume.shape == (1, *full[1].volume.shape) and np.abs(volume[0].numpy() - full[1].volume).max() < 1e-5
    assert np.abs(heatmaps[0].numpy() - alone[0].heatmaps).max() < 1e-5 and np.abs(heatmaps[1].numpy() - full[1].heatmaps).max() < 1e-5


def test_landmarks_on_the_device_are_the_numpy_ones(torch_cpu):
    """Random maps (peaks at the borders and corners, maps with no positive cell) and the network's own."""
    from facevox.landmarks import from_heatmaps
    from facevox.torch_volume import landmarks_from_heatmaps

    rng = np.random.default_rng(2)
    heatmaps = rng.normal(size=(2, 68, 96, 96)).astype(np.float32)
    for n, (i, j) in enumerate([(0, 0), (0, 95), (95, 0), (95, 95), (0, 40), (95, 41), (42, 0), (43, 95), (1, 94)]):
        heatmaps[0, n, i, j] = 10
    heatmaps[1, :3] = -rng.uniform(0.5, 1, (3, 96, 96))  # nothing above 0: the peak cell itself
    heatmaps[1, 3] = -1  # ties: the first
    depth = rng.uniform(0, 200, heatmaps.shape).astype(np.float32)
    crops = np.stack([np.asarray(photo.resize((192, 192))) for photo in sources()[:2]])
    with torch.inference_mode():
        _, real, real_depth = torch_cpu.forward(crops, False)
    for maps, depths in [(torch.from_numpy(heatmaps), torch.from_numpy(depth)), (real, real_depth)]:
        got = landmarks_from_heatmaps(maps, depths, 192).numpy()
        assert got.shape == (2, 68, 3) and got.dtype == np.float32
        for n in range(2):
            want = from_heatmaps(maps[n].numpy(), depths[n].numpy(), 192)
            assert np.abs(got[n, :, :2] - want[:, :2]).max() < 1e-4
            assert np.array_equal(got[n, :, 2], want[:, 2].astype(np.float32))


@pytest.mark.needs_detector
def test_reconstructor_with_torch_network(torch_cpu):
    photo = np.asarray(sources()[1])
    want = facevox.Reconstructor().reconstruct(photo)
    got = facevox.Reconstructor(network=torch_cpu).reconstruct(photo)
    assert len(got) == len(want) == 1
    assert np.abs(got[0].landmarks_3d - want[0].landmarks_3d).max() < 0.05
    assert abs(len(got[0].mesh.vertices) - len(want[0].mesh.vertices)) <= 0.001 * len(want[0].mesh.vertices)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_network_matches_cpu(torch_cpu):
    crops = np.random.default_rng(1).integers(0, 256, (2, 192, 192, 3), dtype=np.uint8)
    for want, got in zip(torch_cpu(crops), TorchVolumeModel(device="cuda")(crops)):
        assert np.abs(got.volume - want.volume).max() < 1e-2


def test_front_depth_on_the_device_is_the_mesh_stage_s():
    from facevox.mesh import front_depth
    from facevox.torch_volume import front_depth as front_depth_torch

    rng = np.random.default_rng(1)
    surface, softness = rng.uniform(3, 30, (2, 8, 9)), rng.uniform(1, 8, (2, 8, 9))
    ramp = np.arange(40)[None, :, None, None] - surface[:, None]
    volumes = np.clip(ramp / softness[:, None] + 0.5, 0, 1).astype(np.float32)
    volumes[0, :, 0, 0] = 0.2  # a column off the face
    depth, mask = front_depth_torch(torch.from_numpy(volumes))
    assert not mask[0, 0, 0] and mask[1, 0, 0]
    for i, volume in enumerate(volumes):
        want_depth, want_mask = front_depth(volume)
        assert np.array_equal(mask[i].numpy(), want_mask)
        assert np.allclose(depth[i].numpy()[want_mask], want_depth[want_mask], atol=1e-4)
        assert np.isinf(depth[i].numpy()[~want_mask]).all()
