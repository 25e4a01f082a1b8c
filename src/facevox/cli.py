"""The `facevox` command: photos in, 3D face files out.

    facevox photo.jpg                                   # writes photo.glb and photo.json beside it
    facevox photos/ more.jpg -o out/ --format glb,stl --all-faces --preview
    facevox serve                                       # the web page (facevox.web)
    facevox site DIR                                    # the web page as a static site (faces made in the browser)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import typer

from facevox.errors import FacevoxError, NoFaceError
from facevox.export import FORMATS
from facevox.files import collect_inputs, write_face_files
from facevox.torch_volume import PRECISIONS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="One photo of a face in, a 3D model of that face out.")


@app.callback()
def _group():
    """One photo of a face in, a 3D model of that face out. `facevox PHOTO...` is short for `facevox reconstruct PHOTO...`."""


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise typer.BadParameter(f"unknown format {', '.join(unknown) or text!r}; choose from {', '.join(FORMATS)}")
    return formats


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


MESH_HELP = ("head: the ICT head fitted to the face (closed, the same vertices every time, a UV texture, 53 ARKit "
             "blendshapes in GLB); surface: the volumetric surface of the visible face (finer detail, front only); "
             "both: NAME.* the head, NAME.surface.* the surface.")
MIRROR_HELP = "Average each face's volume and landmarks with those of its mirrored crop (default): smaller errors; --no-mirror is about a fifth faster on a CPU."


@app.command("reconstruct")
def reconstruct_command(
    inputs: List[Path] = typer.Argument(..., help="Photos, or folders of photos.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the results (default: beside each photo)."),
    formats: str = typer.Option("glb,json", "--format", "-f", help=f"Comma-separated: {', '.join(FORMATS)}."),
    all_faces: bool = typer.Option(False, "--all-faces", help="Every face in each photo, not only the largest."),
    preview: bool = typer.Option(False, "--preview", help="Also write NAME.preview.png, the mesh seen from three angles."),
    size_mm: Optional[float] = typer.Option(None, "--size-mm", min=1.0, help="STL: scale the largest extent to this many millimetres."),
    max_triangles: int = typer.Option(0, "--max-triangles", min=0, help="Decimate surfaces above this many triangles (0: never)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Another ONNX model (a JSON of its sizes beside it), or a shipped model's name: vrn-hg2-w192 (dense, the default) or hsp-hg2-w192 (hierarchical, where shipped)."),
    mirror: bool = typer.Option(True, "--mirror/--no-mirror", help=MIRROR_HELP),
    mesh: str = typer.Option("head", "--mesh", help=MESH_HELP),
):
    """Reconstruct every photo given; one line per problem, a summary at the end, exit 1 if anything failed."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from facevox.api import Reconstructor, Settings

    console, errors = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    wanted = parse_formats(formats)
    mesh = parse_mesh(mesh)
    files, problems = collect_inputs(inputs)
    for problem in problems:
        errors.print(f"[red]error[/]: {problem}", highlight=False)
    if not files:
        raise typer.Exit(1)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            errors.print(f"[red]error[/]: cannot create output folder {out}: {error.strerror}", highlight=False)
            raise typer.Exit(1)
    try:
        reconstructor = Reconstructor(model, settings=Settings(max_triangles=max_triangles, solid="stl" in wanted and mesh != "head",
                                                                 mirror=mirror, mesh=mesh))
    except (FileNotFoundError, ValueError, KeyError) as error:
        errors.print(f"[red]error[/]: cannot load the model: {error}", highlight=False)
        raise typer.Exit(1)
    except FacevoxError as error:  # no face detector installed
        from rich.markup import escape

        errors.print(f"[red]error[/]: {escape(str(error))}", highlight=False)
        raise typer.Exit(1)

    summary = Summary()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=errors, transient=True, disable=len(files) < 2)
    with progress:
        task = progress.add_task("reconstructing", total=len(files))
        for photo in files:
            try:
                written = reconstruct_file(reconstructor, photo, out, wanted, all_faces, preview, size_mm, mesh)
                summary.done.append(str(photo))
                console.print(f"{photo} → {', '.join(str(p) for p in written)}", highlight=False)
            except NoFaceError:
                summary.no_face.append(str(photo))
                errors.print(f"[yellow]no face[/]: {photo}", highlight=False)
            except FacevoxError as error:
                summary.failed.append(str(photo))
                errors.print(f"[red]failed[/]: {error}", highlight=False)
            except Exception as error:  # one bad photo never stops a batch
                summary.failed.append(str(photo))
                errors.print(f"[red]failed[/]: {photo}: {type(error).__name__}: {error}", highlight=False)
            progress.advance(task)
    if len(files) > 1 or problems:
        console.print(f"done {len(summary.done)}, no face {len(summary.no_face)}, failed {len(summary.failed) + len(problems)}")
    if summary.no_face or summary.failed or problems:
        raise typer.Exit(1)


def parse_mesh(text: str) -> str:
    from facevox.api import MESH_CHOICES

    if text not in MESH_CHOICES:
        raise typer.BadParameter(f"unknown mesh {text!r}; choose from {', '.join(MESH_CHOICES)}", param_hint="--mesh")
    return text


def reconstruct_file(reconstructor, photo: Path, out: Path | None, formats: list[str], all_faces: bool,
                     preview: bool, size_mm: float | None, mesh: str = "head") -> list[Path]:
    """Reconstruct one photo and write its files (each atomically); returns the paths written."""
    faces = reconstructor.reconstruct(photo, all_faces=all_faces)
    return write_face_files(reconstructor, faces, photo, out, formats, preview, size_mm, mesh=mesh)


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    max_concurrent: int = typer.Option(2, "--max-concurrent", min=1, help="Reconstructions running at once."),
    queue_size: int = typer.Option(8, "--queue", min=0, help="Uploads waiting beyond those; more get 503 (busy)."),
    ttl: float = typer.Option(1800.0, "--ttl", min=1.0, help="Seconds results are kept (in memory) for download."),
    max_upload_mb: float = typer.Option(15.0, "--max-upload-mb", min=0.1, help="Largest upload, in megabytes."),
):
    """The web page and HTTP API: drop a photo, turn the 3D face around, download it (OpenAPI docs at /docs)."""
    import uvicorn
    from rich.console import Console

    from facevox.web import create_app

    web_app = create_app(max_concurrent=max_concurrent, queue_size=queue_size, ttl_s=ttl,
                         max_upload_bytes=int(max_upload_mb * 1_000_000))
    shown = f"[{host}]" if ":" in host else host
    Console(stderr=True).print(f"facevox on [bold]http://{shown}:{port}/[/] (API docs: /docs); Ctrl+C stops it", highlight=False)
    uvicorn.run(web_app, host=host, port=port, log_level="warning")


@app.command("site")
def site_command(
    folder: Path = typer.Argument(..., help="The folder to write (made if missing).", show_default=False),
):
    """The web page as a static site, for any static file host: faces are made in the visitor's browser
    (HTML, scripts and the models; no server behind it). See docs/browser.md to publish it."""
    from facevox.web.site import write_site

    written = write_site(folder)
    size = sum(f.stat().st_size for path in written for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
    typer.echo(f"wrote {folder} ({size / 1e6:.0f} MB); try it: python -m http.server -d {folder} 8000")


@app.command("batch")
def batch_command(
    inputs: List[str] = typer.Argument(..., help="Photos, folders of photos, or globs (quote them: 'photos/**/*.jpg').", show_default=False),
    out: str = typer.Option(..., "--out", "-o", help="Output folder, or a URL (s3://, gs://, hdfs://, file://; others through fsspec)."),
    formats: str = typer.Option("glb,json", "--format", "-f", help=f"Comma-separated: {', '.join(FORMATS)}."),
    engine: str = typer.Option("local", "--engine", help="local: a process pool on this machine; ray: a Ray cluster (pip install facevox\\[cluster])."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: 'auto' (the cluster this machine is part of) or ray://HOST:PORT; default: Ray on this machine only."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes (local) or actors (ray); default: one per CPU core (with --device six, fewer if half the available memory, at 250 MB each, holds fewer), or per --gpus-per-worker of each GPU."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="Ray: run the network on a GPU with torch, this share of one per actor (e.g. 0.25)."),
    device: Optional[str] = typer.Option(None, "--device", help="Local: run the network with torch on this device (cuda, cuda:1) in one process that all workers share, batched (pip install facevox\\[gpu]); default: onnxruntime on each worker's CPU."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Photos per step; each step writes one index part."),
    all_faces: bool = typer.Option(True, "--all-faces/--largest-only", help="Every face in each photo, or only the largest."),
    size_mm: Optional[float] = typer.Option(None, "--size-mm", min=1.0, help="STL: scale the largest extent to this many millimetres."),
    max_triangles: int = typer.Option(0, "--max-triangles", min=0, help="Decimate surfaces above this many triangles (0: never)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Another ONNX model (a JSON of its sizes beside it), or a shipped model's name: vrn-hg2-w192 (dense, the default) or hsp-hg2-w192 (hierarchical, where shipped)."),
    mirror: bool = typer.Option(True, "--mirror/--no-mirror", help=MIRROR_HELP),
    mesh: str = typer.Option("head", "--mesh", help=MESH_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", help=f"--device: the network's number format there ({', '.join(PRECISIONS)}); default fp16 on CUDA (as accurate as fp32 on the benchmark, 21 % faster end to end on an H100), else fp32."),
    reserve_core: bool = typer.Option(True, "--reserve-core/--shared-cores", help="--device: keep the network process to a core of its own (on 4 cores or more)."),
):
    """Many photos: one mesh (and JSON) per face and a Parquet index of every input (OUT/index). A rerun
    skips the inputs already in the index. Per-photo failures are recorded there and do not stop the job;
    exit 1 only if an input named was not found (the others are still processed)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    errors = Console(stderr=True, soft_wrap=True)
    try:
        from facevox.batch import ENGINES, Options, find_inputs, plan, run
        from facevox.batch.network_server import NetworkServerError
    except ImportError as error:
        errors.print(f"[red]error[/]: facevox batch needs pyarrow ({error}): pip install 'facevox\\[batch]'", highlight=False)
        raise typer.Exit(1)
    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}", param_hint="--engine")
    if engine != "ray" and (gpus_per_worker or address):
        raise typer.BadParameter("--address and --gpus-per-worker need --engine ray (one GPU here: --device cuda)", param_hint="--engine")
    if engine == "ray" and device:
        raise typer.BadParameter("--device is for the local engine; on Ray use --gpus-per-worker", param_hint="--device")
    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"unknown number format {precision!r}; choose from {', '.join(PRECISIONS)}", param_hint="--precision")
    wanted = parse_formats(formats)
    mesh = parse_mesh(mesh)
    keys, problems, root = find_inputs(inputs)
    for problem in problems:
        errors.print(f"[red]error[/]: {problem}", highlight=False)
    if not keys:
        raise typer.Exit(1)
    options = Options(out=out, root=root, formats=tuple(wanted), all_faces=all_faces, size_mm=size_mm,
                      max_triangles=max_triangles, model=str(model.resolve()) if model else None, mirror=mirror,
                      mesh=mesh)
    try:
        pending, clashes, skipped = plan(keys, options)
    except OSError as error:
        errors.print(f"[red]error[/]: cannot use {out}: {error}", highlight=False)
        raise typer.Exit(1)
    counts = {"done": 0, "no face": 0, "failed": len(clashes)}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=errors, transient=True, disable=not pending)
    with progress:
        task = progress.add_task(f"reconstructing ({engine})", total=len(pending))
        try:
            for records in run(pending, options, engine, workers, batch_size, address, gpus_per_worker, device,
                               reserve_core, precision):
                for record in records:
                    counts[record["status"]] += 1
                progress.advance(task, len(records))
        except NetworkServerError as error:
            errors.print(f"[red]error[/]: {error}; a rerun continues where this stopped", highlight=False)
            raise typer.Exit(1)
    typer.echo(f"done {counts['done']}, no face {counts['no face']}, failed {counts['failed']}"
               f" (already in the index: {skipped}); index: {out.rstrip('/')}/index")
    if problems:
        raise typer.Exit(1)


COMMANDS = {"reconstruct", "serve", "site", "batch"}


def main(argv: list[str] | None = None) -> None:
    """Entry point: `facevox PHOTO...` means `facevox reconstruct PHOTO...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("--help", "-h"):
        argv.insert(0, "reconstruct")
    app(argv, prog_name="facevox")


if __name__ == "__main__":
    main()
