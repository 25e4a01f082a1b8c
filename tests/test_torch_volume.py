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
