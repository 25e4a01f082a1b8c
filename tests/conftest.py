"""Shared test photos and a real Reconstructor, made once per test session.

Photos come from packages only: scikit-image's astronaut (NASA, public domain) and matplotlib's
grace_hopper.jpg sample.

Tests that need a face detector (marked `needs_detector`, or using the `reconstructor` fixture) are
skipped where none is installed."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from PIL import Image


NO_DETECTOR = "no face detector installed (facevox.faces.default_detectors)"


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_detector: needs a face detector; skipped where none is installed")


@functools.cache
def detector_installed() -> bool:
    from facevox.errors import FacevoxError
    from facevox.faces import default_detectors

    try:
        default_detectors()
    except FacevoxError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    needing = [item for item in items if "needs_detector" in item.keywords or "reconstructor" in getattr(item, "fixturenames", ())]
    if needing and not detector_installed():
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=NO_DETECTOR))


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 1×1 PNG whose header claims width×height pixels (a decompression bomb's header)."""
    import struct
    import zlib

    data = bytearray(encode(np.zeros((1, 1), np.uint8), "PNG"))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def astronaut_png(astronaut) -> bytes:
    return encode(astronaut, "PNG")


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut) -> bytes:
    return encode(astronaut, "JPEG", quality=92)


@pytest.fixture(scope="session")
def grace_hopper_jpeg() -> bytes:
    from matplotlib import cbook

    with open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb") as f:
        return f.read()


@pytest.fixture(scope="session")
def grace_hopper(grace_hopper_jpeg) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(grace_hopper_jpeg)).convert("RGB"))


@pytest.fixture(scope="session")
def grey_png() -> bytes:
    return encode(np.full((240, 320, 3), 128, np.uint8), "PNG")


@pytest.fixture(scope="session")
def reconstructor():
    import facevox

    return facevox.Reconstructor(settings=facevox.Settings(solid=True))


@pytest.fixture(scope="session")
def two_faces_png(astronaut, grace_hopper) -> bytes:
    """The astronaut and Grace Hopper side by side: a photo with two faces."""
    hopper = np.asarray(Image.fromarray(grace_hopper).resize((512, 600)))
    canvas = np.full((600, 1024, 3), 240, np.uint8)
    canvas[:512, :512] = astronaut
    canvas[:, 512:] = hopper
    return encode(canvas, "PNG")


@pytest.fixture(scope="session")
def surrey():
    from training import sfm

    if not (sfm.sfm_dir() / "sfm_shape_3448.bin").exists():
        pytest.skip("Surrey Face Model files not found (set FACEVOX_SFM)")
    return sfm.load()


@pytest.fixture(scope="session")
def tiny_hsp_model(tmp_path_factory, surrey):
    """An untrained hierarchical model for 64-pixel crops (4 levels: 16³ to 128³), exported: (net, path)."""
    torch = pytest.importorskip("torch", reason="exporting a model needs the [train] extra (torch)")
    from facevox.net import NetConfig, build
    from training.export_onnx import export

    torch.manual_seed(0)
    net = build(NetConfig(stacks=1, width=32, hsp_levels=4, hsp_channels=4, input_size=64, volume_depth=64)).eval()
    with torch.no_grad():  # a fresh head's occupancy is its prior alone: make it read the features and the image too
        for head in net.levels:
            head.occupancy.weight.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("hsp") / "tiny-hsp.onnx"
    export(net, path, {"name": "tiny-hsp", "training_steps": 0})
    return net, path
