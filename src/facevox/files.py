"""Photos found on disk and the files written for each face: shared by the `facevox` command and the
batch engine, so that neither depends on the other."""

from __future__ import annotations

from pathlib import Path


def collect_inputs(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Image files named or found (recursively) in folders, in order; and one message per unusable input."""
    from facevox.image import is_image_path

    files, problems = [], []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_image_path(p) and not p.name.startswith("."))
            if not found:
                problems.append(f"{item}: no images found in this folder")
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            problems.append(f"{item}: no such file")
    return files, problems


def output_stem(photo: Path, out_dir: Path | None, index: int) -> Path:
    """Where the index-th face of `photo` goes, without suffix: PHOTO, then PHOTO_face2, ...; beside the
    photo unless `out_dir` is given."""
    folder = out_dir if out_dir is not None else photo.parent
    return folder / (photo.stem if index == 0 else f"{photo.stem}_face{index + 1}")


def write_face_files(reconstructor, faces, photo: Path, out: Path | None, formats: list[str], preview: bool,
                     size_mm: float | None, write=None, mesh: str = "head") -> list[Path]:
    """Write each face's files, named by output_stem, with write(path, bytes) (default: atomic local writes).
    mesh "head" or "surface": that mesh's files as NAME.FMT; "both": the head's as NAME.FMT and the
    surface's as NAME.surface.FMT. The JSON (one per face) is NAME.json; an OBJ head brings NAME.mtl
    and its texture NAME.png."""
    from facevox.export import export_files, write_atomic
    from facevox.export.head import head_mesh

    write = write or write_atomic
    written = []
    model_name = reconstructor.model.info.get("name")
    meshes = {"head": [("head", "")], "surface": [("surface", "")], "both": [("head", ""), ("surface", ".surface")]}[mesh]
    for index, face in enumerate(faces):
        stem = output_stem(photo, out, index)
        for which, suffix in meshes:
            for fmt in formats:
                if fmt == "json" and suffix:
                    continue
                for name, data in export_files(face, fmt, stem.name + suffix, size_mm=size_mm, model=model_name, mesh=which).items():
                    write(stem.with_name(name), data)
                    written.append(stem.with_name(name))
            if preview:
                from facevox.preview import contact_sheet, save_png

                path = stem.with_name(f"{stem.name}{suffix}.preview.png")
                write(path, save_png(contact_sheet(head_mesh(face.head) if which == "head" else face.mesh)))
                written.append(path)
    return written
