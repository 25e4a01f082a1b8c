"""The ICT FaceKit training source: its landmark convention against the Surrey model's, its speed, a preview.

    PYTHONPATH=src:. python -m bench.ict_source                       # → bench/results/ict_source.json
    PYTHONPATH=src:. python -m bench.ict_source --preview /tmp/ict.png  # also a sheet of renders (not committed)

Convention: for each Surrey landmark convention (training.sfm.LANDMARK_CONVENTIONS), the ICT source's
68 landmark vertices (training.ict_head.surrey_correspondence) against the Surrey model's, on the mean
faces: `rigid` is the distance after the similarity fit of the 51 inner landmarks alone (the two mean
faces' own difference included), `placed` after the thin-plate warp that pins the inner points (how
far the Surrey point lies from the ICT surface), `ict_own` the distance on the ICT head from the
chosen vertex to ICT's own landmark vertex for that point (the models' conventions); `placed` split into
its part along the ICT surface (`placed_along_surface`: where on the face) and across it
(`placed_off_surface`: how far the Surrey surface lies above or below ICT's there). All in mm and in
% of the Surrey mean's outer eye-corner distance (iBUG 37–46). Against the Surrey source: both mean
faces rendered at yaw 0, 45 and 90° without crop jitter, the IoU of their face masks and the mean
distance of their landmarks in crop pixels (the two faces' shapes differ). Speed: sample(8) on CPU with one torch
thread, median of 3 after one warm-up, wall and process CPU seconds, beside the Surrey source's (on a
shared machine the CPU seconds are the figure to trust).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from training import sfm
from training.ict_head import load_head, surrey_correspondence
from training.render import vertex_normals
from training.sources.ict import IctFaces
from training.sources.synthetic import SyntheticFaces

GROUPS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68)}
OUT = Path(__file__).parent / "results" / "ict_source.json"


def convention_figures(model, head) -> dict:
    match = surrey_correspondence(head, model)
    ours = model.mean[model.landmarks]
    chosen = match.surrey_to_ict[model.landmarks]
    iod = float(np.linalg.norm(ours[36] - ours[45]))
    scale = np.linalg.norm(match.rigid[head.landmarks[36]] - match.rigid[head.landmarks[45]]) / np.linalg.norm(
        head.neutral[head.landmarks[36]] - head.neutral[head.landmarks[45]])
    distances = {
        "rigid": np.linalg.norm(match.rigid[chosen] - ours, axis=1),
        "placed": np.linalg.norm(match.placed[chosen] - ours, axis=1),
        "ict_own": np.linalg.norm(head.neutral[chosen] - head.neutral[head.landmarks], axis=1) * scale,
    }
    normals = vertex_normals(torch.as_tensor(match.placed, dtype=torch.float32)[None], torch.as_tensor(head.triangles))[0].numpy()
    offset = match.placed[chosen] - ours
    along_normal = (offset * normals[chosen]).sum(1)
    distances["placed_along_surface"] = np.linalg.norm(offset - along_normal[:, None] * normals[chosen], axis=1)
    distances["placed_off_surface"] = np.abs(along_normal)
    out = {"iod_mm": iod, "per_point_mm": {k: v.round(2).tolist() for k, v in distances.items()}}
    for kind, d in distances.items():
        out[kind] = {group: {"mean_mm": float(d[list(idx)].mean()), "max_mm": float(d[list(idx)].max()),
                             "mean_iod_pct": float(100 * d[list(idx)].mean() / iod)} for group, idx in GROUPS.items()}
    return out


def against_surrey(ict, surrey_source, model, yaws=(0.0, 45.0, 90.0)) -> dict:
    """The two sources on their mean faces at the same pose, no crop jitter: IoU of the face masks and
    the landmarks' mean distance (crop pixels)."""
    out = {}
    for yaw in yaws:
        zero, angle = torch.zeros(1), torch.tensor([yaw])
        g = torch.Generator().manual_seed(0)
        ours = ict.render(torch.zeros(1, ict.identity_basis.shape[0]), torch.zeros(1, 53), torch.zeros(1, 2), angle, zero, zero,
                          torch.tensor([1000.0]), g, camera_effects=False, jitter=False)
        theirs = surrey_source.render(torch.as_tensor(model.mean, dtype=torch.float32)[None], angle, zero, zero, g,
                                      camera_effects=False, jitter=False)
        iou = (ours.mask & theirs.mask).sum() / (ours.mask | theirs.mask).sum()
        offset = (ours.landmarks[0, :, :2] - theirs.landmarks[0, :, :2]).norm(dim=-1)
        out[f"yaw_{yaw:g}"] = {"mask_iou": float(iou), "landmark_offset_px": float(offset.mean()),
                               "jaw_offset_px": float(offset[:17].mean()), "inner_offset_px": float(offset[17:].mean())}
    return out


def speed(source, batch: int = 8, repeats: int = 3) -> dict:
    """Median wall and process CPU seconds of sample(batch) (one torch thread), after one warm-up."""
    source.sample(batch, 0)
    wall, cpu = [], []
    for seed in range(1, repeats + 1):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        source.sample(batch, seed)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu))}


def preview(source, path: Path) -> None:
    """Renders at yaw 0, 45, 90 (neutral, then with expressions) and random samples, landmarks in green."""
    import cv2

    b = 8
    g = torch.Generator().manual_seed(7)
    yaw = torch.tensor([0.0, 45.0, 90.0, -45.0, 0.0, 45.0, 90.0, -90.0])
    zero = torch.zeros(b)
    expression = torch.zeros(b, 53)
    names = source.expression_names
    for i, pose in ((4, ("jawOpen", 0.6)), (5, ("mouthSmile_L", 1.0)), (5, ("mouthSmile_R", 1.0)), (6, ("eyeBlink_L", 1.0)),
                    (6, ("browInnerUp_L", 1.0)), (7, ("jawOpen", 0.3)), (7, ("mouthFunnel", 0.8))):
        expression[i, names.index(pose[0])] = pose[1]
    identity = torch.randn(b, source.identity_basis.shape[0], generator=g) * source.identity_sd
    gaze = (torch.rand(b, 2, generator=g) * 2 - 1) * 20
    fixed = source.render(identity, expression, gaze, yaw, zero, zero, torch.full((b,), 800.0), g, camera_effects=False)
    drawn = source.sample(b, 11)
    rows = []
    for batch in (fixed, drawn):
        panels = []
        for i in range(b):
            image = np.ascontiguousarray((batch.image[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
            for x, y, _ in batch.landmarks[i].tolist():
                cv2.circle(image, (round(x), round(y)), 1, (0, 255, 0), -1)
            mask, depth = batch.mask[i].numpy(), batch.depth[i].numpy()
            shade = np.zeros(mask.shape)
            shade[mask] = 1 - (depth[mask] - depth[mask].min()) / max(np.ptp(depth[mask]), 1e-6)
            panels.append(np.concatenate([image, np.repeat((255 * shade)[..., None], 3, -1).astype(np.uint8)], 0))
        rows.append(np.concatenate(panels, 1))
    cv2.imwrite(str(path), np.concatenate(rows, 0)[:, :, ::-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", default=None, help="ICT model folder or file (default ../shared/data/ict-face)")
    parser.add_argument("--preview", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    head = load_head(args.ict) if args.ict else load_head()
    result = {"conventions": {name: convention_figures(sfm.load(landmarks=name), head) for name in sfm.LANDMARK_CONVENTIONS}}
    model = sfm.load()
    torch.set_num_threads(1)
    ict, surrey_source = IctFaces(model, head), SyntheticFaces(model)
    result["mean_faces_against_surrey"] = against_surrey(ict, surrey_source, model)
    result["seconds_per_batch_of_8"] = {"ict": speed(ict), "surrey": speed(surrey_source)}
    if args.preview:
        preview(ict, args.preview)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name, figures in result["conventions"].items():
        print(name, {kind: {g: round(v["mean_mm"], 2) for g, v in figures[kind].items()} for kind in ("rigid", "placed", "placed_along_surface", "ict_own")})
    print(result["mean_faces_against_surrey"])
    print(result["seconds_per_batch_of_8"])


if __name__ == "__main__":
    main()
