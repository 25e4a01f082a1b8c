"""Train / held-out splits of the real photo sets (by person where the set names persons)."""

from __future__ import annotations

import csv
import re
import zlib
from pathlib import Path


def person(original_name: str) -> str:
    """RMFD photos carry the person in their name (0_0_anhu_0004.jpg → anhu); others stand alone."""
    match = re.match(r"\d+_\d+_([a-z]+)_\d+", original_name)
    return match.group(1) if match else original_name


def held_out(key: str) -> bool:
    return zlib.crc32(key.encode()) % 10 == 0


def real_faces(folder: Path, split: str) -> list[Path]:
    """Photos of ../shared/data/real-faces in the 'train' or 'val' split (about 10 % of persons)."""
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = split == "val"
    return [folder / r["file"] for r in rows if held_out(person(r["original_name"])) == want]


def celeb_faces(folder: Path, split: str) -> list[Path]:
    """Photos of ../shared/data/celeb-faces in the 'train' or 'val' split (about 10 %, by file: no identities)."""
    want = split == "val"
    return [f for f in sorted(Path(folder).glob("celeb_*.jpg")) if held_out(f.name) == want]


SETS = {"real-faces": real_faces, "celeb-faces": celeb_faces}


def photos(set_name: str, folder: Path, split: str) -> list[Path]:
    """The 'train' or 'val' photos of a named set ('real-faces' or 'celeb-faces') in `folder`."""
    return SETS[set_name](Path(folder), split)
