"""One network process on a GPU, shared by the local engine's CPU workers (`facevox batch --device cuda`).

Each worker keeps its whole Reconstructor but the network: a `NetworkClient` (VolumeModel's interface)
hands its crops to the `NetworkServer` process, which owns the torch network (`torch_volume.torch_network`)
on the device and runs the requests queued at that moment, up to max_batch, as one batch (it never
waits for more). Data moves
through one shared-memory block with a slot per worker: a crop and its `surface` flag in; the 68
landmarks (68, 3) out, found on the device (`facevox.torch_volume.landmarks_from_heatmaps`), and, where
the flag asks for the surface (not for the first of the two passes, which needs only the landmarks),
the front depth and mask (the model's `front_depth`, on the device: all the surface mesh needs) and
the volume itself as uint8 (round(occupancy × 255)) only where a solid is wanted (STL). The server
copies each output of a batch from the device at once, into a staging buffer (pinned on CUDA), and
from there into the slots. The queues carry only slot numbers and error messages. A server that dies,
or stops its heartbeat, makes every client raise NetworkServerError within `timeout` seconds, and the
batch stops (no photo is recorded as failed). reserve_core: the server gets a core of its own; mirror:
TorchVolumeModel's (a full pass's outputs averaged with the mirrored crop's).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from facevox.volume import NetworkOutput, model_files

HEARTBEAT = 0.5  # seconds between the server's signs of life, and between the clients' checks of them
START_TIMEOUT = 300.0  # seconds for the server to load the network (CUDA start-up included)


class NetworkServerError(RuntimeError):
    """The shared network process failed or is gone: the whole batch stops."""


def _layout(info: dict, volume: bool) -> dict[str, tuple[tuple[int, ...], type]]:
    s, d, n = (int(info[k]) for k in ("input_size", "volume_depth", "num_landmarks"))
    d = s if "hierarchy" in info else d  # a hierarchical model's solid comes from its level on the crop's grid
    layout = {"crops": ((s, s, 3), np.uint8), "surface": ((), np.bool_), "points": ((n, 3), np.float32),
              "evidence": ((), np.float32), "front": ((s, s), np.float32), "mask": ((s, s), np.bool_)}
    return layout | ({"volume": ((d, s, s), np.uint8)} if volume else {})


def block_size(info: dict, slots: int, volume: bool = False) -> int:
    """Bytes of the shared block for this many slots (each array 64-byte aligned)."""
    return sum(-(-slots * int(np.prod(shape)) * np.dtype(dtype).itemsize // 64) * 64 for shape, dtype in _layout(info, volume).values())


def slot_arrays(buffer, info: dict, slots: int, volume: bool = False) -> dict[str, np.ndarray]:
    """The block as arrays with one row per slot: crops (s, s, 3) uint8, surface (a bool: the front depth
    wanted), points (68, 3) float32, front depth (s, s) float32 and mask (s, s) bool, and (if `volume`)
    the volume (D, s, s) uint8."""
    arrays, offset = {}, 0
    for name, (shape, dtype) in _layout(info, volume).items():
        arrays[name] = np.ndarray((slots, *shape), dtype, buffer, offset)
        offset += -(-arrays[name].nbytes // 64) * 64
    return arrays


def staging(info: dict, max_batch: int, volume: bool, device) -> dict:
    """Host tensors for a batch's crops and outputs (as the block's rows), page-locked on CUDA, so that
    each array crosses between host and device in one direct copy."""
    import torch

    buffers = {name: torch.from_numpy(np.empty((max_batch, *shape), dtype)) for name, (shape, dtype) in _layout(info, volume).items()
               if name != "surface"}
    return {name: b.pin_memory() for name, b in buffers.items()} if torch.device(device).type == "cuda" else buffers


def answer(model, arrays: dict[str, np.ndarray], slots: list[int], buffers: dict) -> None:
    """Run the crops in these slots through the network as one batch (through `staging` buffers); write each
    one's landmarks to its slot, and its front depth and mask (and volume) if its surface flag is set."""
    import torch

    from facevox.torch_volume import evidence_of, landmarks_from_heatmaps

    buffers["crops"][:len(slots)].numpy()[...] = arrays["crops"][slots]
    surface = arrays["surface"][slots]
    full = [slot for slot, wanted in zip(slots, surface) if wanted]
    with torch.inference_mode():
        volume, heatmaps, depth = model.forward(buffers["crops"][:len(slots)], surface)
        outputs = {"points": landmarks_from_heatmaps(heatmaps, depth, model.input_size), "evidence": evidence_of(heatmaps)}
        if full:
            outputs["front"], outputs["mask"] = model.front_depth(volume)
            if "volume" in arrays:
                outputs["volume"] = model.dense_volume(volume).mul_(255).round_().to(torch.uint8)
        for name, tensor in outputs.items():
            buffers[name][:len(tensor)].copy_(tensor, non_blocking=True)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
    for name, tensor in outputs.items():
        arrays[name][slots if name in ("points", "evidence") else full] = buffers[name][:len(tensor)].numpy()


@dataclass
class ServerHandle:
    """What a worker needs to reach the server; passed to worker processes as they start."""

    block: str  # the shared memory's name
    info: dict  # the model's JSON
    slots: int
    volume: bool  # the volume travels too (for solids)
    requests: object  # queue of slot numbers (None: stop)
    replies: list  # a queue per slot: None when the outputs are in the slot, else an error message
    heartbeat: object  # shared double: time.time() of the server's last sign of life
    claimed: object  # shared int: slots handed to clients so far
    timeout: float
    cores: tuple[int, ...] | None = None  # the cores the workers keep to (reserve_core), else None: all


def split_cores() -> tuple[int, tuple[int, ...]] | None:
    """With 4 usable cores or more: one for the server, and the rest, less its hyperthread siblings, for
    the workers; else None."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(usable) < 4:
        return None
    core, siblings = usable[-1], {usable[-1]}
    try:  # e.g. "7,15" or "14-15"
        for part in Path(f"/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list").read_text().strip().split(","):
            first, _, last = part.partition("-")
            siblings.update(range(int(first), int(last or first) + 1))
    except (OSError, ValueError):
        pass
    return core, tuple(c for c in usable if c not in siblings)


class NetworkServer:
    """The network process and its shared memory, for up to `slots` clients. A context manager: leaving
    it stops the process and frees the memory. facts: the device's name and the process's core (or None).
    reserve_core (on 4 usable cores or more): the process keeps to one core (`split_cores`) and the
    handle's `cores` name the others, for the clients' processes to keep to (the local engine's workers
    do), so that they never starve it."""

    def __init__(self, model=None, device: str = "cuda", slots: int = 1, max_batch: int = 64, precision: str | None = None,
                 timeout: float = 10.0, volume: bool = False, reserve_core: bool = False, mirror: bool = True):
        context = multiprocessing.get_context("spawn")  # no fork after CUDA starts
        path, info = model_files(model)
        size = block_size(info, slots, volume)
        if os.path.isdir("/dev/shm"):  # Linux: fail here, not with a bus error when a slot is first written
            room = os.statvfs("/dev/shm")
            if room.f_bavail * room.f_frsize < size:
                raise NetworkServerError(f"shared memory for {slots} workers needs {size / 2**20:.0f} MiB, more than "
                                         f"/dev/shm has free (fewer --workers, or Docker's --shm-size)")
        core, cores = (reserve_core and split_cores()) or (None, None)
        self._block = SharedMemory(create=True, size=size)
        self.handle = ServerHandle(self._block.name, info, slots, volume, context.Queue(), [context.Queue() for _ in range(slots)],
                                   context.Value("d", time.time(), lock=False), context.Value("i", 0), timeout, cores)
        status = context.Queue()
        self.process = context.Process(target=_serve, args=(self.handle, str(path), device, max_batch, precision, mirror, core, status),
                                       name="facevox-network", daemon=True)
        self.process.start()
        try:
            self.facts = _wait_until_ready(self.process, status)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "NetworkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process (after the batch in hand) and free the shared memory."""
        if self.process.is_alive():
            self.handle.requests.put(None)
            self.process.join(self.handle.timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self._block.close()
        self._block.unlink()


def _wait_until_ready(process, status) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            message = status.get(timeout=HEARTBEAT)
        except queue.Empty:
            if not process.is_alive():
                raise NetworkServerError(f"the network process exited while starting (exit code {process.exitcode})")
            continue
        if isinstance(message, str):
            raise NetworkServerError(f"the network process could not start: {message}")
        return message
    raise NetworkServerError(f"the network process did not start within {START_TIMEOUT:.0f} s")


def _serve(handle: ServerHandle, path: str, device: str, max_batch: int, precision: str | None, mirror: bool, core: int | None,
           status) -> None:
    """The server process: load the network, then answer batches of requests until told to stop."""
    try:
        if core is not None:  # before torch starts its threads: they inherit it
            os.sched_setaffinity(0, {core})
        import torch

        from facevox.torch_volume import torch_network

        model = torch_network(path, device, precision, mirror)
        block = SharedMemory(handle.block)
        arrays = slot_arrays(block.buf, handle.info, handle.slots, handle.volume)
        buffers = staging(handle.info, min(max_batch, handle.slots), handle.volume, model.device)
        cuda = model.device.type == "cuda"
        # No cuDNN autotuning: batches come in every size up to the worker count, and tuning each new
        # shape stalled every worker for up to seconds (16 clients: 15 faces/s with it, 344 without).
        torch.backends.cudnn.benchmark = False
        facts = {"device": torch.cuda.get_device_name(model.device) if cuda else str(model.device),
                 "core": core, "max_batch": max_batch, "precision": model.precision, "mirror": mirror}
    except Exception as error:
        status.put(f"{type(error).__name__}: {error}")
        return
    threading.Thread(target=_beat, args=(handle.heartbeat,), daemon=True).start()
    status.put(facts)
    parent = os.getppid()
    while True:
        try:
            slots = [handle.requests.get(timeout=HEARTBEAT)]
        except queue.Empty:
            if os.getppid() != parent:  # the engine is gone
                return
            continue
        while len(slots) < max_batch:
            try:
                slots.append(handle.requests.get_nowait())
            except queue.Empty:
                break
        work = [slot for slot in slots if slot is not None]
        try:
            if work:
                answer(model, arrays, work, buffers)
            error = None
        except Exception as failure:  # e.g. CUDA out of memory: these clients raise; the engine stops
            error = f"{type(failure).__name__}: {failure}"
        for slot in work:
            handle.replies[slot].put(error)
        if None in slots:
            return


def _beat(heartbeat) -> None:
    while True:
        heartbeat.value = time.time()
        time.sleep(HEARTBEAT)


class NetworkClient:
    """VolumeModel's interface in a worker process: crops go to the server one at a time, through the
    slot this client claims."""

    def __init__(self, handle: ServerHandle):
        with handle.claimed.get_lock():
            self.slot = handle.claimed.value
            handle.claimed.value += 1
        if self.slot >= handle.slots:
            raise NetworkServerError(f"more clients than the server's {handle.slots} slots")
        self.handle = handle
        self.info = handle.info
        self.input_size = int(handle.info["input_size"])
        self._block = SharedMemory(handle.block)
        self._arrays = {name: array[self.slot, ...] for name, array in slot_arrays(self._block.buf, handle.info, handle.slots, handle.volume).items()}

    def __call__(self, crops: np.ndarray, surface: bool = True) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop: its landmarks (points), and its
        front depth unless surface=False (the volume, the uint8 / 255, only if the server sends it)."""
        crops = np.asarray(crops)
        return [self._one(crop, surface) for crop in (crops[None] if crops.ndim == 3 else crops)]

    def _one(self, crop: np.ndarray, surface: bool) -> NetworkOutput:
        arrays = self._arrays
        arrays["crops"][...] = crop
        arrays["surface"][...] = surface
        self.handle.requests.put(self.slot)
        while True:
            try:
                error = self.handle.replies[self.slot].get(timeout=HEARTBEAT)
                break
            except queue.Empty:
                silent = time.time() - self.handle.heartbeat.value
                if silent > self.handle.timeout:
                    raise NetworkServerError(f"the network process has not answered for {silent:.0f} s (it died or hangs)") from None
        if error:
            raise NetworkServerError(f"the network process failed: {error}")
        points = arrays["points"].astype(np.float64)
        if not surface:
            return NetworkOutput(None, None, None, points=points, face_evidence=float(arrays["evidence"]))
        volume = np.divide(arrays["volume"], 255, dtype=np.float32) if "volume" in arrays else None
        front = (arrays["front"].astype(np.float64), arrays["mask"].copy())
        return NetworkOutput(volume, None, None, front, points)
