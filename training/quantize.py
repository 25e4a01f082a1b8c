"""The dense volume network in int8 for the CPU: onnxruntime's static quantization of a trained ONNX file
(QDQ format, int8 weights per output channel, uint8 activations), calibrated on face crops of training
photos, with the three output heads left in float.

    PYTHONPATH=src:. python -m training.quantize [--model src/facevox/models/vrn-hg2-w192.onnx] \\
        [--data ../shared/data] [--photos 128] [--out src/facevox/models/vrn-hg2-w192-int8.onnx]

Calibration crops: the first `--photos` photos of the 'train' splits of real-faces and celeb-faces (half
each; never a measuring set), prepared as for labelling (`training.label_real.prepare`), the largest face
found by facevox's default detectors, cropped by the crop rule, and its mirror image (the product runs
both). The heads (volume, heatmaps, landmark depths: 1×1 convolutions, a few percent of the time) stay
in float, as do the graph's ends (input scaling, the sigmoid). Writes the ONNX file and its JSON: the
float model's, with `precision` and `quantized_from`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from facevox.volume import model_files

FLOAT_NODES = ("/net/Sub", "/net/volume_head/Conv", "/net/heatmap_head/Conv", "/net/depth_head/Conv", "/net/Mul", "/net/Div", "/Sigmoid")


def calibration_crops(data: Path, photos: int, size: int) -> np.ndarray:
    """(n, 3, size, size) float32 in [0, 1]: face crops of training photos and their mirror images."""
    from PIL import Image

    from facevox import crop
    from facevox.faces import default_detectors, detect_faces
    from training.label_real import prepare
    from training.splits import celeb_faces, real_faces

    detectors = default_detectors()
    files = [f for split, name in ((real_faces, "real-faces"), (celeb_faces, "celeb-faces"))
             for f in split(data / name, "train")[: photos // 2]]
    crops = []
    for file in files:
        image, _, _ = prepare(np.asarray(Image.open(file).convert("RGB")), 0.3)
        found = detect_faces(image, detectors)
        if found:
            crops.append(crop.crop_image(image, crop.crop_matrix(found[0].box, size), size))
    crops = np.stack(crops)
    crops = np.concatenate([crops, crops[:, :, ::-1]])
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / 255


def quantize(model: Path, out: Path, crops: np.ndarray, method: str = "MinMax") -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(crops[i : i + 1] for i in range(len(crops)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Crops(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(FLOAT_NODES),
                        calibrate_method=CalibrationMethod[method])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="float ONNX model (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--photos", type=int, default=128, help="calibration photos (half from each set)")
    parser.add_argument("--method", default="MinMax", choices=("MinMax", "Percentile", "Entropy"), help="activation range calibration")
    parser.add_argument("--out", type=Path, default=None, help="default: beside the model, NAME-int8.onnx")
    args = parser.parse_args(argv)
    model, info = model_files(args.model)
    out = args.out or model.with_name(f"{model.stem}-int8.onnx")
    crops = calibration_crops(args.data, args.photos, int(info["input_size"]))
    quantize(model, out, crops, args.method)
    info.update(precision="int8", quantized_from=model.name,
                quantization=f"training/quantize.py: onnxruntime static QDQ ({args.method} calibration), per-channel int8 weights, uint8 activations, "
                             f"calibrated on {len(crops) // 2} face crops of training photos and their mirror images; heads in float")
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB from {len(crops)} calibration crops (mirrors included)")


if __name__ == "__main__":
    main()
