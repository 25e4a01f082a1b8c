"""Train the volumetric face network (nanoGPT-style: config at the top, one readable loop).

    python -m training.train --out runs/main --minutes 8.5      # starts, or resumes runs/main/ckpt.pt
    python -m training.train --init-onnx src/facevox/models/vrn-hg2-w192.onnx ...   # from shipped weights
    python -m training.train ... --real-labels cache/labels --real-photos cache --real-fraction 0.3
    python -m training.train ... --ict-fraction 0.3 --ict cache/ict-face     # ICT heads in the mix
    python -m training.train --net hsp-hg2-w192 --init-onnx src/facevox/models/vrn-hg2-w192.onnx --freeze-steps 1000 ...

An HSP net (`--net hsp-*`, facevox.hsp_net) also trains its hierarchical head (training/hsp.py); started from
a dense model's ONNX file it takes that file's backbone and heads, and --freeze-steps holds them still at first.

With --real-labels (training/label_real.py's output; photos in REAL_PHOTOS/SET/), each batch mixes
synthetic faces with real photos and their profiled views (training/sources/real.py) in the given
share, and a texture_fraction of the synthetic faces wear skin sampled from those photos.
With --ict-fraction, that share of each batch comes from ICT FaceKit heads (training/sources/ict.py)
instead of the Surrey model, wearing the same real skin where there is some.

Each call trains until --minutes have passed (the device tool allows ≤ 10 minutes a command), then
saves the checkpoint; the next call resumes it. The loss log is appended to OUT/log.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from pathlib import Path
from queue import Queue
from threading import Thread

import torch
import torch.nn.functional as F

from facevox.net import CONFIGS, VolumeNet, build
from facevox.torch_volume import from_onnx
from facevox.volume import model_files
from training import sfm
from training.hsp import evaluate_hierarchy, hierarchy_losses, walls
from training.ict_head import DEFAULT_DIR as ICT_DEFAULT_DIR, load_head
from training.sources.ict import IctFaces
from training.sources.real import Mixture, RealFaces
from training.sources.synthetic import SyntheticFaces, load_photos
from training.splits import real_faces
from training.voxels import occupancy

# ---- config (every key can be overridden: --key value) ----
config = dict(
    net="vrn-hg2-w192",
    batch_size=32,
    lr=1e-3,
    weight_decay=1e-4,
    warmup_steps=500,
    total_steps=10**9,  # training stops here; the learning rate is constant until the decay stretch
    decay_steps=0,  # the last decay_steps steps before total_steps decay the rate (cosine) to 2 %
    stop_step=0,  # stop here even though the schedule runs to total_steps (0: total_steps); replays a run cut by time
    volume_weight=1.0,
    heatmap_weight=1000.0,
    depth_weight=0.05,
    classes_weight=1.0,  # HSP: free / boundary / occupied cross-entropy of level 0 and the inner levels
    occupancy_weight=10.0,  # HSP: occupancy cross-entropy of the levels from 1 (the last one's is the volume; 10 as the dense volume in stage G)
    surface_weight=0.0,  # the surface's shape, offset and tilt taken out, and its slopes (`surface_loss`); 0: off (stages A–E); the shipped stages F and G used 0.02
    heatmap_sigma=1.5,  # in heatmap cells
    seed=1,  # training batches use seeds seed * 10**7 + step; held-out sets use seeds ≥ 10**9
    eval_every=500,
    ahead=2,  # batches drawn ahead in a background thread on their own CUDA stream (0: in the loop)
    compile=0,  # 1: torch.compile the network and losses (pays a compile of about a minute at start)
    backbone_lr_scale=1.0,  # HSP: the backbone's and dense heads' learning rate is lr times this (the new head's is lr)
    freeze_steps=0,  # HSP: the backbone and dense heads stay as initialised for this many steps (only the new head learns)
    hsp_threshold=0.08,  # HSP: an octant is refined when its highest boundary probability exceeds this (HSP's demo value)
    hsp_boundary="front",  # HSP: which surface is refined: "front" (the visible one) or "all" (HSP's rule, the outline's walls too); training/hsp.py
    hsp_blocks="2048,8192,16384",  # HSP: blocks per level and batch in training (levels 1, 2, ...; one number: every level)
    minutes=8.5,
    out="runs/main",
    init_onnx="",
    photos="",  # folder of real-faces photos for background clutter ('' = procedural only)
    sfm="",
    landmarks="contour",  # the Surrey model's 68 landmark vertices (training.sfm.LANDMARK_CONVENTIONS): "contour" (so far) or "ict-jaw" (3D jaw line)
    real_labels="",  # folder of SET.npz labels ('' = synthetic only, the default)
    real_photos="cache",  # folder holding one folder of photos per labelled set (real-faces/, celeb-faces/)
    real_sets="",  # comma-separated labelled sets to use ('' = every SET.npz in real_labels)
    real_fraction=0.3,  # share of each batch drawn from the real photos
    real_original=0.3,  # share of real samples shown as photographed (the rest are profiled views)
    real_head=0,  # 1: an ICT FaceKit head (--ict) behind profiled real faces (ears, neck, scalp; sources/real.py), 0: none
    texture_fraction=0.3,  # share of synthetic faces wearing a real photo's skin (with --real-labels)
    ict_fraction=0.0,  # share of each batch rendered from ICT FaceKit heads (sources/ict.py), taken from the Surrey share
    ict="",  # the ICT head: a folder with model.npz (the data set's, or training/ict_head.py's pack) or the file ('' = ../shared/data/ict-face)
    device="cuda" if torch.cuda.is_available() else "cpu",
)
HELD_OUT_SEED = 10**9


def heatmap_targets(landmarks: torch.Tensor, size: int, input_size: int, sigma: float) -> torch.Tensor:
    """Gaussian heatmaps (b, 68, size, size) centred on landmarks given in crop pixels."""
    stride = input_size / size
    centres = (landmarks[..., :2] - (stride - 1) / 2) / stride  # crop pixels → heatmap cells
    cells = torch.arange(size, device=landmarks.device, dtype=torch.float32)
    gx = torch.exp(-((cells - centres[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((cells - centres[..., 1:2]) ** 2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


SURFACE_WINDOW = 6  # voxels each side of the target surface that the surface loss reads


def local_front_depth(occupancy: torch.Tensor, around: torch.Tensor, window: int = SURFACE_WINDOW) -> torch.Tensor:
    """(b, D, h, w) occupancy probabilities → (b, h, w): the depth of the surface they imply, read only
    within `window` voxels of `around` (b, h, w): the empty voxels from there to the surface, less the
    half voxel by which `occupancy` targets place it. Stray voxels far in front of or behind the
    surface do not move it; a surface further off than the window counts as at its edge."""
    first = around.floor().long() - window
    ks = (first[:, None] + torch.arange(2 * window + 1, device=around.device)[None, :, None, None]).clamp(0, occupancy.shape[1] - 1)
    return first.float() + (1 - occupancy.gather(1, ks)).sum(dim=1) - 0.5


def tilt(difference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, h, w) → (b, h, w): the plane a + b·x + c·y fitted to each face's difference over its mask
    (least squares, in float32 also under autocast): how far in depth, and how tilted, one surface lies
    from another."""
    h, w = mask.shape[1:]
    with torch.autocast(mask.device.type, enabled=False):
        y, x = torch.meshgrid(torch.linspace(-1, 1, h, device=mask.device), torch.linspace(-1, 1, w, device=mask.device), indexing="ij")
        basis = torch.stack([torch.ones_like(x), x, y])  # (3, h, w)
        weight = mask.float()
        gram = torch.einsum("ihw,jhw,bhw->bij", basis, basis, weight) + 1e-6 * torch.eye(3, device=mask.device)
        moments = torch.einsum("ihw,bhw->bi", basis, weight * torch.where(mask, difference.float(), 0.0))
        coefficients = torch.linalg.solve(gram, moments)
        return torch.einsum("bi,ihw->bhw", coefficients, basis)


def surface_loss(volume_logits: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The shape of the surface, as the dense error sees it after rigid alignment: mean L1 over the
    face's pixels of the volume's front depth (`local_front_depth`) against the target's, once the
    plane fitted to their difference (`tilt`: depth offset and small rotations, which a single view
    leaves uncertain and the volume cross-entropy already asks for) is taken out, plus that of their
    slopes (differences to the next pixel across and down). Per-voxel cross-entropy asks for each voxel
    on its own; this asks for the surface."""
    target = torch.where(mask, depth, 0.0).clamp(0.0, volume_logits.shape[1] - 1.0)
    soft = local_front_depth(torch.sigmoid(volume_logits.float()), target)
    aligned = soft - tilt((soft - target).detach(), mask)
    error = (aligned - target)[mask].abs().mean()
    for axis in (1, 2):
        length = mask.shape[axis] - 1
        both = mask.narrow(axis, 0, length) & mask.narrow(axis, 1, length)
        error = error + (aligned.diff(dim=axis) - target.diff(dim=axis)).abs()[both].mean()
    return error


def losses(net: VolumeNet, batch, cfg) -> dict[str, torch.Tensor]:
    """The loss parts; those with a `NAME_weight` in the config are trained, the rest only logged."""
    c = net.config
    volume_target = occupancy(batch.depth, batch.mask, c.volume_depth)
    decoded = net.trunk(batch.image)
    volume, (heatmaps, landmark_depth) = net.volume_logits(decoded), net.landmark_maps(decoded)
    heatmap_target = heatmap_targets(batch.landmarks, heatmaps.shape[-1], c.input_size, cfg["heatmap_sigma"])
    depth_error = (landmark_depth.float() - batch.landmarks[..., 2, None, None]).abs()
    parts = {
        "volume": F.binary_cross_entropy_with_logits(volume.float(), volume_target),
        "heatmap": F.mse_loss(heatmaps.float(), heatmap_target),
        "depth": (depth_error * heatmap_target).sum() / heatmap_target.sum(),
    }
    if cfg["surface_weight"]:
        parts["surface"] = surface_loss(volume, batch.depth, batch.mask)
    if c.hsp_levels:
        parts.update(hierarchy_losses(net, decoded, batch, cfg))
    return parts


def train_step(step_losses, net: VolumeNet, optimizer, batch, cfg) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step on a batch; `step_losses` is `losses` or its compiled form."""
    batch.image = batch.image.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch.image.is_cuda):
        parts = step_losses(net, batch, cfg)
    loss = sum(cfg[f"{name}_weight"] * part for name, part in parts.items() if f"{name}_weight" in cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optimizer.step()
    return loss, parts


def batches(source, batch_size: int, seeds, ahead: int, device: str):
    """Yields source.sample(batch_size, seed) for each seed. With ahead > 0 on CUDA a background thread
    draws up to `ahead` batches in advance on its own stream, so data synthesis (and its host round
    trips) overlaps the training steps instead of stalling them."""
    if ahead <= 0 or torch.device(device).type != "cuda":
        for seed in seeds:
            yield source.sample(batch_size, seed)
        return
    queue, stream = Queue(maxsize=ahead), torch.cuda.Stream()

    def produce():
        try:
            with torch.cuda.stream(stream):
                for seed in seeds:
                    batch = source.sample(batch_size, seed)
                    ready = torch.cuda.Event()
                    ready.record(stream)
                    queue.put((batch, ready))
        except BaseException as error:  # handed to the training loop, which raises it
            queue.put((error, None))

    Thread(target=produce, daemon=True).start()
    while True:
        batch, ready = queue.get()
        if ready is None:
            raise batch
        torch.cuda.current_stream().wait_event(ready)
        for tensor in vars(batch).values():
            tensor.record_stream(torch.cuda.current_stream())
        yield batch


@torch.no_grad()
def evaluate(net: VolumeNet, source, batches: int = 4, batch_size: int = 16) -> dict[str, float]:
    """Volumetric IoU and losses on a fixed held-out synthetic set."""
    net.eval()
    inter = union = 0.0
    for i in range(batches):
        batch = source.sample(batch_size, HELD_OUT_SEED + i)
        with torch.autocast(net_device(net).type, dtype=torch.bfloat16, enabled=net_device(net).type == "cuda"):
            volume, _, _ = net(batch.image)
        predicted = volume.float() > 0
        target = occupancy(batch.depth, batch.mask, net.config.volume_depth) > 0.5
        inter += (predicted & target).sum().item()
        union += (predicted | target).sum().item()
    net.train()
    return {"iou": inter / max(union, 1)}


def parameter_groups(net: VolumeNet, backbone_scale: float) -> list[dict]:
    """The optimiser's groups, each with its learning-rate `scale`: an HSP net's backbone and dense heads
    (net.backbone()) at `backbone_scale`, the rest at 1; a dense net is all one group at 1."""
    if not net.config.hsp_levels:
        return [{"params": list(net.parameters()), "scale": 1.0}]
    backbone = {id(p) for module in net.backbone() for p in module.parameters()}
    return [{"params": [p for p in net.parameters() if id(p) in backbone], "scale": backbone_scale},
            {"params": [p for p in net.parameters() if id(p) not in backbone], "scale": 1.0}]


def net_device(net):
    return next(net.parameters()).device


def config_from_command_line(config: dict, description: str) -> dict:
    """The config with every key overridable as --key value (underscores as dashes)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, value in config.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    return vars(parser.parse_args())


def build_sources(cfg: dict):
    """The training source (synthetic Surrey faces, mixed with real photos when real_labels is set and
    ICT heads when ict_fraction is) and the held-out sources that `evaluate` reads, by log key."""
    model = sfm.load(cfg["sfm"] or None, landmarks=cfg["landmarks"])
    photos = load_photos(real_faces(Path(cfg["photos"]), "train")) if cfg["photos"] else None
    source = SyntheticFaces(model, photos, device=cfg["device"])
    held_out = {"iou": SyntheticFaces(model, None, device=cfg["device"])}
    textures = None
    if cfg["real_labels"]:
        sets = [name for name in cfg["real_sets"].split(",") if name] or None
        real = RealFaces.from_folder(model, cfg["real_labels"], cfg["real_photos"], "train", sets=sets, device=cfg["device"],
                                     original_fraction=cfg["real_original"],
                                     head=load_head(cfg["ict"] or ICT_DEFAULT_DIR) if cfg["real_head"] else None)
        textures = real.textures() if cfg["texture_fraction"] > 0 else None
        source = SyntheticFaces(model, photos, device=cfg["device"], textures=textures, texture_fraction=cfg["texture_fraction"])
        source = Mixture([source, real], [1 - cfg["real_fraction"], cfg["real_fraction"]])
        try:
            held_out["real_iou"] = RealFaces.from_folder(model, cfg["real_labels"], cfg["real_photos"], "val", sets=sets, device=cfg["device"])
        except FileNotFoundError:
            pass
        print(f"real photos: {real.count} for training, {held_out['real_iou'].count if 'real_iou' in held_out else 0} held out", flush=True)
    if cfg["ict_fraction"] > 0:
        head = load_head(cfg["ict"] or ICT_DEFAULT_DIR)
        ict = IctFaces(model, head, photos, device=cfg["device"], textures=textures, texture_fraction=cfg["texture_fraction"])
        held_out["ict_iou"] = IctFaces(model, head, None, device=cfg["device"])
        if isinstance(source, Mixture):
            source.sources.append(ict)
            source.shares = [source.shares[0] - cfg["ict_fraction"], *source.shares[1:], cfg["ict_fraction"]]
        else:
            source = Mixture([source, ict], [1 - cfg["ict_fraction"], cfg["ict_fraction"]])
    return source, held_out


def new_net(name: str, device) -> VolumeNet:
    """A fresh network of the registry on the device, its 2D convolutions channels-last (the HSP head's 3D ones keep their layout)."""
    net = build(CONFIGS[name]).to(device)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return net


def main():
    cfg = config_from_command_line(config, __doc__)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    source, held_out = build_sources(cfg)
    torch.manual_seed(cfg["seed"])
    net = new_net(cfg["net"], cfg["device"])
    optimizer = torch.optim.AdamW(parameter_groups(net, cfg["backbone_lr_scale"]), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    step, checkpoint = 0, out / "ckpt.pt"
    base_steps = 0  # steps already in the weights a run started from (--init-onnx)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=cfg["device"], weights_only=False)
        net.load_state_dict({k: v.float() for k, v in state["model"].items()})
        scales = [group["scale"] for group in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        for group, scale in zip(optimizer.param_groups, scales):  # this call's --backbone-lr-scale
            group["scale"] = scale
        step = state["step"]
        base_steps = state.get("base_steps", 0)
        print(f"resumed {checkpoint} at step {step}")
    elif cfg["init_onnx"]:
        missing = from_onnx(net, cfg["init_onnx"], partial=bool(net.config.hsp_levels))
        if missing:
            print(f"{len(missing)} weights not in {cfg['init_onnx']} start fresh (the hierarchical head)")
        base_steps = model_files(cfg["init_onnx"])[1].get("training_steps", 0)
        print(f"initialised from {cfg['init_onnx']}")

    def lr_at(s):  # warmup, constant, then a cosine decay over the last decay_steps (resumable in chunks)
        if s < cfg["warmup_steps"]:
            return cfg["lr"] * (s + 1) / cfg["warmup_steps"]
        decay_start = cfg["total_steps"] - cfg["decay_steps"]
        progress = min(1.0, max(0.0, (s - decay_start) / max(1, cfg["decay_steps"])))
        return cfg["lr"] * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))

    log = open(out / "log.jsonl", "a")
    started, last = time.time(), time.time()
    last_step = cfg["stop_step"] or cfg["total_steps"]
    step_losses = torch.compile(losses) if cfg["compile"] else losses
    stream = batches(source, cfg["batch_size"], (cfg["seed"] * 10**7 + s for s in itertools.count(step)), cfg["ahead"], cfg["device"])
    frozen = None
    while step < last_step and time.time() - started < cfg["minutes"] * 60:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group["scale"]
        if net.config.hsp_levels and (step < cfg["freeze_steps"]) != frozen:  # frozen: no gradients, no Adam steps, no weight decay
            frozen = step < cfg["freeze_steps"]
            for module in net.backbone():
                module.requires_grad_(not frozen)
        loss, parts = train_step(step_losses, net, optimizer, next(stream), cfg)
        step += 1
        if step % 50 == 0 or step == 1:
            steps_per_s = 50 / (time.time() - last) if step > 1 else 0.0
            record = {"step": step, "lr": lr_at(step), "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                      "steps_per_s": steps_per_s, "samples_per_s": steps_per_s * cfg["batch_size"]}
            if step % cfg["eval_every"] == 0:
                record.update({key: evaluate(net, held)["iou"] for key, held in held_out.items()})
                if net.config.hsp_levels:
                    record.update(evaluate_hierarchy(net, held_out["iou"], cfg["hsp_threshold"], HELD_OUT_SEED, walls=walls(cfg)))
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
            last = time.time()  # the held-out check is not counted in the next rate
    state = {"model": net.state_dict(),
             "optimizer": optimizer.state_dict(), "step": step, "config": cfg["net"], "train_config": cfg,
             "base_steps": base_steps, "metadata": {"name": cfg["net"], "training_steps": base_steps + step}}
    torch.save(state, checkpoint.with_suffix(".tmp"))
    os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
    print(f"saved {checkpoint} at step {step}")


if __name__ == "__main__":
    main()
