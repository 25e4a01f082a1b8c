"""Test and benchmark photos made from the two face photos that ship with scikit-image and matplotlib
(astronaut Eileen Collins, Grace Hopper): flips, rescales and crops, one photo with both faces, and
bad files (empty, text named .jpg, truncated JPEG, a grey image with no face)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BAD = {"bad/empty.jpg": "failed", "bad/text.jpg": "failed", "bad/truncated.jpg": "failed", "bad/grey.jpg": "no face"}


def sources() -> list[Image.Image]:
    import matplotlib.cbook
    import skimage.data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return [Image.fromarray(skimage.data.astronaut()), hopper]


def variant(image: Image.Image, i: int) -> Image.Image:
    """The i-th variant: mirrored every other time, rescaled 0.6-1.4×, cropped up to 12% from each side."""
    rng = np.random.default_rng(i)
    if i % 2:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = image.size
    left, top, right, bottom = (rng.uniform(0, 0.12, 4) * [w, h, w, h]).astype(int)
    image = image.crop((left, top, w - right, h - bottom))
    scale = rng.uniform(0.6, 1.4)
    return image.resize((max(64, int(image.width * scale)), max(64, int(image.height * scale))), Image.Resampling.BILINEAR)


def make_photos(folder: Path, count: int, bad: bool = True) -> list[Path]:
    """count photos in folder (in good/, good/more/ and bad/): variants, one two-face photo and, if bad, BAD."""
    folder = Path(folder)
    astronaut, hopper = sources()
    made = []
    for name in BAD if bad else ():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        made.append(folder / name)
    if bad:
        (folder / "bad/empty.jpg").write_bytes(b"")
        (folder / "bad/text.jpg").write_text("not a photo\n")
        sink = folder / "bad/truncated.jpg"
        hopper.save(sink, quality=90)
        sink.write_bytes(sink.read_bytes()[:3000])
        Image.new("RGB", (320, 240), (128, 128, 128)).save(folder / "bad/grey.jpg")
    both = Image.new("RGB", (astronaut.width + hopper.width, max(astronaut.height, hopper.height)))
    both.paste(astronaut, (0, 0))
    both.paste(hopper, (astronaut.width, 0))
    path = folder / "good/both.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    both.save(path, quality=90)
    made.append(path)
    for i in range(count - len(made)):
        path = folder / ("good/more" if i % 3 == 2 else "good") / f"{('astronaut', 'hopper')[i % 2]}_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        variant((astronaut, hopper)[i % 2], i // 2).save(path, quality=90)
        made.append(path)
    return made
