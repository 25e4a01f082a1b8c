"""training/quantize.py: an int8 copy of the network that runs in the pipeline's runtime and agrees with
the float network on a face."""

import numpy as np
import pytest

pytest.importorskip("onnx")


def test_int8_copy_agrees_with_the_float_network(tmp_path, astronaut):
    from facevox import crop
    from facevox.faces import default_detectors, detect_faces
    from facevox.volume import VolumeModel, model_files
    from training.quantize import quantize

    box = detect_faces(astronaut, default_detectors())[0].box
    face = crop.crop_image(astronaut, crop.crop_matrix(box, 192), 192)
    calibration = np.ascontiguousarray(np.stack([face, face[:, ::-1]]).transpose(0, 3, 1, 2), dtype=np.float32) / 255
    model, _ = model_files(None)
    out = tmp_path / "int8.onnx"
    quantize(model, out, calibration)
    out.with_suffix(".json").write_bytes(model.with_suffix(".json").read_bytes())

    assert out.stat().st_size < model.stat().st_size / 3  # int8 weights
    floating, int8 = (VolumeModel(path, mirror=False)(face)[0] for path in (model, out))
    assert np.mean((floating.volume > 0.5) == (int8.volume > 0.5)) > 0.99
    shift = np.linalg.norm(floating.landmarks(192)[:, :2] - int8.landmarks(192)[:, :2], axis=1)
    assert shift.mean() < 1.0 and shift.max() < 4.0  # crop pixels
