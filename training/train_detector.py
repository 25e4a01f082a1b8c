"""Train facevox's face detector (one readable loop; config at the top, every key a --flag).

    python -m training.train_detector --out runs/detector --minutes 8      # starts, or resumes OUT/ckpt.pt
    python -m training.train_detector --out runs/detector --export src/facevox/models/face-detector.onnx

Scenes come from `training.scenes`: labelled real photos (`training.label_real`'s fits, landmarks
projected into each photo; photos in REAL_PHOTOS/SET/), crops of rendered and profiled faces from the
volume network's sources (and ICT FaceKit heads with --ict-share), and face-free pictures. The held-out check uses the `val` splits only.
Loss: CenterNet's focal loss on the face-centre map, L1 on log size and centre offset.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import sfm
from training.detector_net import STRIDE, DetectorNet, decode
from training.fit import project
from training.scenes import Picture, SceneMaker, face_boxes, face_free_pictures
from training.train import config_from_command_line

config = dict(
    net="det-s",
    size=384,  # scene side in pixels (a multiple of 32)
    batch_size=64,
    crops_per_scene_batch=48,  # face crops a worker draws from the pool for each batch of scenes it composes
    crop_pool=6144,  # rendered and profiled face crops kept in shared memory for the workers
    refresh_every=100,  # steps between renewals of an eighth of the crop pool
    workers=max(1, (os.cpu_count() or 2) - 2),  # processes composing scenes on the CPU (0: in the loop itself)
    scenes_per_item=16,  # scenes a worker composes at a time
    lr=2e-3,
    weight_decay=5e-4,
    warmup_steps=300,
    total_steps=20000,  # the cosine decay runs over the whole schedule
    size_weight=1.0,
    offset_weight=1.0,
    seed=1,
    eval_every=500,
    minutes=8.0,
    out="runs/detector",
    real_labels="cache/labels",
    real_photos="cache",
    sfm="",
    ict_share=0.0,  # share of the crop pool rendered from ICT FaceKit heads (sources/ict.py: ears, neck, hair; yaw to 90°)
    ict="",  # the ICT head: a folder with model.npz (the data set's, or training/ict_head.py's pack) or the file ('' = ../shared/data/ict-face)
    device="cuda" if torch.cuda.is_available() else "cpu",
    export="",  # write the ONNX model (+ JSON) from OUT/ckpt.pt here and stop
)


def labelled_pictures(model, labels_dir, photo_root, split: str, device) -> list[Picture]:
    """Every labelled photo of a split with its fitted face's 68 landmarks, projected into the photo."""
    from PIL import Image

    from training.label_real import load_labels

    pictures = []
    for path in sorted(Path(labels_dir).glob("*.npz")):
        labels = load_labels(path, split)
        for i, name in enumerate(labels["photo"]):
            shape = model.shape(labels["identity"][i].astype(np.float64), labels["expression"][i].astype(np.float64))
            points = project(shape[model.landmarks], labels["rotation"][i].astype(np.float64), float(labels["scale"][i]),
                             labels["translation"][i].astype(np.float64))[:, :2]
            image = np.asarray(Image.open(Path(photo_root) / str(labels["set"]) / name).convert("RGB"))
            pictures.append(Picture(torch.as_tensor(image.copy(), device=device).permute(2, 0, 1), points[None]))
    return pictures


def targets(faces: list[np.ndarray], size: int, device):
    """Per scene: centre heat map (b, h, w) with Gaussian peaks of exactly 1 at face centres, and for
    the centre cells the scene index, cell (y, x), log size and offset targets."""
    cells = size // STRIDE
    boxes = [face_boxes(f) for f in faces]
    owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]) if boxes else np.zeros(0, int)
    boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    heat = torch.zeros(len(faces), cells, cells, device=device)
    if not len(boxes):
        return heat, None
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / STRIDE
    wh = (boxes[:, 2:] - boxes[:, :2]) / STRIDE
    cell = np.clip(np.floor(centre).astype(int), 0, cells - 1)
    sigma = np.maximum(0.6, np.sqrt(wh[:, 0] * wh[:, 1]) / 8)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)
    grid = torch.arange(cells, device=device, dtype=torch.float32)
    gx = torch.exp(-((grid[None] - t(cell[:, 0])[:, None]) ** 2) / (2 * t(sigma)[:, None] ** 2))
    gy = torch.exp(-((grid[None] - t(cell[:, 1])[:, None]) ** 2) / (2 * t(sigma)[:, None] ** 2))
    gaussians = gy[:, :, None] * gx[:, None, :]  # (n, cells, cells), 1 at each face's cell
    heat.index_reduce_(0, torch.as_tensor(owner, device=device), gaussians, "amax")
    centre_targets = dict(
        scene=torch.as_tensor(owner, device=device), y=torch.as_tensor(cell[:, 1], device=device),
        x=torch.as_tensor(cell[:, 0], device=device), log_size=t(np.log(np.maximum(wh, 0.25))),
        offset=t(centre - cell),
    )
    return heat, centre_targets


def losses(maps: torch.Tensor, heat: torch.Tensor, centres) -> dict[str, torch.Tensor]:
    logits = maps[:, 0].float()
    p = torch.sigmoid(logits)
    positive = heat >= 1.0 - 1e-4
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    focal = torch.where(positive, (1 - p) ** 2 * log_p, (1 - heat) ** 4 * p ** 2 * log_not_p)
    count = max(1, int(positive.sum()))
    parts = {"centre": -focal.sum() / count}
    if centres is None:
        parts["size"] = parts["offset"] = maps.sum() * 0.0
        return parts
    at = maps[centres["scene"], :, centres["y"], centres["x"]].float()  # (n, 5)
    parts["size"] = F.l1_loss(at[:, 1:3], centres["log_size"])
    parts["offset"] = F.l1_loss(at[:, 3:5], centres["offset"])
    return parts


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) × (m, 4) → (n, m) IoU."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


@torch.no_grad()
def evaluate(net, scenes, faces, threshold: float = 0.4) -> dict[str, float]:
    """Recall (IoU ≥ 0.5) and false detections per scene on a fixed set of held-out scenes."""
    net.eval()
    found = sum((decode(net(scenes[i:i + 32]), threshold) for i in range(0, len(scenes), 32)), [])
    net.train()
    hits = total = false = 0
    for detections, points in zip(found, faces):
        truth = face_boxes(points) if len(points) else np.zeros((0, 4))
        boxes = detections[:, :4].cpu().numpy()
        iou = box_iou(boxes, truth) if len(boxes) and len(truth) else np.zeros((len(boxes), len(truth)))
        hits += int((iou.max(0) >= 0.5).sum()) if len(boxes) else 0
        total += len(truth)
        false += int((iou.max(1) < 0.3).sum()) if len(truth) else len(boxes)
    return {"recall": hits / max(total, 1), "false_per_scene": false / len(faces)}


class CropPool:
    """Rendered (synthetic) and profiled real face crops with their 68 landmarks, in shared memory so
    that the scene workers draw from it while the loop renews it on the GPU. Each render takes its
    crops from the sources in proportion to `shares` (training.sources.real.Mixture)."""

    def __init__(self, sources, shares, size: int, seed: int):
        from training.sources.real import Mixture

        self.mixture, self.seed = Mixture(sources, shares), seed
        images, marks = self.render(min(size, 256), seed)
        self.images = torch.zeros((size, *images.shape[1:]), dtype=torch.uint8).share_memory_()
        self.landmarks = torch.zeros((size, 68, 2)).share_memory_()
        self.images[:len(images)], self.landmarks[:len(images)] = images, marks
        for start in range(len(images), size, 256):
            self.renew(torch.arange(start, min(size, start + 256)), seed + start)

    def render(self, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.mixture.sample(count, seed)
        return (batch.image.float().clamp(0, 1) * 255).round().byte().cpu(), batch.landmarks[..., :2].float().cpu()

    def renew(self, slots: torch.Tensor, seed: int) -> None:
        images, marks = self.render(len(slots), seed)
        self.images[slots], self.landmarks[slots] = images, marks

    def draw(self, count: int, rng: np.random.Generator) -> list[Picture]:
        picks = rng.integers(len(self.images), size=count)
        return [Picture(self.images[i], self.landmarks[i].numpy()[None].astype(np.float64)) for i in picks]


def as_they_are(item):
    """The loader's convert step: keep the landmark arrays as numpy (the default turns them into tensors)."""
    return item


class SceneStream(torch.utils.data.IterableDataset):
    """Endless items of `per_item` scenes (uint8) and their faces' landmarks, composed on the CPU."""

    def __init__(self, maker: SceneMaker, pool: CropPool, per_item: int, crops: int, seed: int):
        self.maker, self.pool, self.per_item, self.crops, self.seed = maker, pool, per_item, crops, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            images, faces = self.maker.make(self.per_item, self.pool.draw(self.crops, rng), rng)
            yield (images * 255).round().byte(), faces


def export(checkpoint: Path, target: Path) -> None:
    """Checkpoint → ONNX (dynamic height and width) + the JSON contract beside it."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    net = DetectorNet(state["config"]).eval()
    net.load_state_dict(state["model"])
    dummy = torch.rand(1, 3, 320, 480)
    torch.onnx.export(net, dummy, str(target), input_names=["image"], output_names=["maps"], opset_version=17,
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "maps": {0: "batch", 2: "rows", 3: "columns"}},
                      dynamo=False)
    info = {"name": state["config"], "kind": "face-detector", "stride": STRIDE, "multiple": 32,
            "input": "RGB in [0, 1], (1, 3, h, w), h and w multiples of 32",
            "outputs": "maps (1, 5, h/4, w/4): centre logit, log width, log height (cells), offset x, y (cells)",
            "box": "the box of the face's 68 iBUG landmarks", "training_steps": state["step"],
            "training": state.get("train_config", {}), "parameters": sum(p.numel() for p in net.parameters())}
    target.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


def main():
    cfg = config_from_command_line(config, __doc__)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    if cfg["export"]:
        export(out / "ckpt.pt", Path(cfg["export"]))
        return
    device = torch.device(cfg["device"])
    torch.backends.cudnn.benchmark = True

    from training.sources.real import RealFaces
    from training.sources.synthetic import SyntheticFaces

    model = sfm.load(cfg["sfm"] or None)
    photos = labelled_pictures(model, cfg["real_labels"], cfg["real_photos"], "train", "cpu")
    held_out_photos = labelled_pictures(model, cfg["real_labels"], cfg["real_photos"], "val", "cpu")
    face_free = [torch.as_tensor(p.copy()).permute(2, 0, 1) for p in face_free_pictures()]
    backgrounds = np.stack([F.interpolate(p.image[None].float(), size=(128, 128), mode="area")[0].permute(1, 2, 0).byte().numpy()
                            for p in photos[:2000]])
    sources = [SyntheticFaces(model, backgrounds, device=device),
               RealFaces.from_folder(model, cfg["real_labels"], cfg["real_photos"], "train", device=device, original_fraction=0.2)]
    held_out_sources = [SyntheticFaces(model, None, device=device),
                        RealFaces.from_folder(model, cfg["real_labels"], cfg["real_photos"], "val", device=device, original_fraction=0.2)]
    shares = [0.5, 0.5]
    rng = np.random.default_rng(10**9)
    val_scenes, val_faces = SceneMaker(held_out_photos, face_free, cfg["size"]).make(
        256, CropPool(held_out_sources, shares, 64, 10**9).draw(64, rng), rng)
    held_out = {"": (val_scenes.to(device), val_faces)}  # log key prefix → scenes, faces
    if cfg["ict_share"] > 0:
        from training.ict_head import DEFAULT_DIR as ICT_DEFAULT_DIR, load_head
        from training.sources.ict import IctFaces

        head = load_head(cfg["ict"] or ICT_DEFAULT_DIR)
        sources.append(IctFaces(model, head, backgrounds, device=device))
        shares = [(1 - cfg["ict_share"]) / 2, (1 - cfg["ict_share"]) / 2, cfg["ict_share"]]
        heads = CropPool([IctFaces(model, head, None, device=device)], [1], 128, 10**9 + 1).draw(128, rng)
        ict_scenes, ict_faces = SceneMaker(heads, face_free, cfg["size"]).make(128, heads, rng)
        held_out["ict_"] = (ict_scenes.to(device), ict_faces)  # ICT heads only: the turned faces' check
    print(f"{len(photos)} training photos, {len(held_out_photos)} held out, {len(face_free)} face-free pictures", flush=True)

    pool = CropPool(sources, shares, cfg["crop_pool"], cfg["seed"] * 10**7)
    stream = SceneStream(SceneMaker(photos, face_free, cfg["size"]), pool, cfg["scenes_per_item"], cfg["crops_per_scene_batch"], cfg["seed"])
    items = iter(torch.utils.data.DataLoader(stream, batch_size=None, collate_fn=as_they_are, num_workers=cfg["workers"],
                                             pin_memory=device.type == "cuda",
                                             prefetch_factor=4 if cfg["workers"] else None, persistent_workers=bool(cfg["workers"])))

    torch.manual_seed(cfg["seed"])
    net = DetectorNet(cfg["net"]).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    step, checkpoint = 0, out / "ckpt.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed {checkpoint} at step {step}", flush=True)

    def check() -> dict[str, float]:
        return {prefix + key: value for prefix, (scenes, faces) in held_out.items() for key, value in evaluate(net, scenes, faces).items()}

    def lr_at(s):
        if s < cfg["warmup_steps"]:
            return cfg["lr"] * (s + 1) / cfg["warmup_steps"]
        return cfg["lr"] * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg["total_steps"]))))

    log = open(out / "log.jsonl", "a")
    if step:  # the resumed network on this run's held-out scenes, before it trains further
        record = {"step": step, "resumed": True, **check()}
        print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
    started = last = time.time()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    while step < cfg["total_steps"] and time.time() - started < cfg["minutes"] * 60:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        if step % cfg["refresh_every"] == 0 and step:
            pool.renew(torch.randperm(len(pool.images))[: len(pool.images) // 8], cfg["seed"] * 10**7 + step)
        parts_of_batch = [next(items) for _ in range(max(1, cfg["batch_size"] // cfg["scenes_per_item"]))]
        scenes = torch.cat([images for images, _ in parts_of_batch]).to(device, non_blocking=True).float() / 255
        faces = [f for _, found in parts_of_batch for f in found]
        heat, centres = targets(faces, cfg["size"], device)
        with autocast:
            maps = net(scenes.contiguous(memory_format=torch.channels_last))
        parts = losses(maps, heat, centres)
        loss = parts["centre"] + cfg["size_weight"] * parts["size"] + cfg["offset_weight"] * parts["offset"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
        step += 1
        if step % 50 == 0 or step == 1:
            record = {"step": step, "lr": lr_at(step), "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                      "scenes_per_s": 50 * cfg["batch_size"] / (time.time() - last) if step > 1 else 0.0}
            last = time.time()
            if step % cfg["eval_every"] == 0:
                record.update(check())
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
    record = {"step": step, **check()}
    print(json.dumps(record), flush=True)
    log.write(json.dumps(record) + "\n")
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "config": cfg["net"],
             "train_config": {k: v for k, v in cfg.items() if k not in ("export", "device")}}
    torch.save(state, checkpoint.with_suffix(".tmp"))
    os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    print(f"saved {checkpoint} at step {step}", flush=True)


if __name__ == "__main__":
    main()
