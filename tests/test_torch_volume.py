"""The torch network (the GPU paths of `facevox batch`: --device, --gpus-per-worker) against onnxruntime, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch network needs torch: pip install -e '.[gpu]'")
pytest.importorskip("onnx", reason="the torch network reads the ONNX weights with onnx: pip install -e '.[gpu]'")

import facevox  # noqa: E402
from facevox.torch_volume import TorchVolumeModel  # noqa: E402
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
