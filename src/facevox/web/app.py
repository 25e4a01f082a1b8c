"""The facevox web app: a FastAPI service and the single page that uses it.

    from facevox.web import create_app
    app = create_app()                       # uvicorn facevox.web:create_app --factory

POST /api/reconstruct (multipart field `photo`) → JSON: one entry per face (box, landmarks, pose) with
the URLs of its files: `meshes.head` (the fitted head, when the reconstructor fits one: the default)
and `meshes.surface` (the volumetric surface), and `files`, the head's if any, else the surface's; GET /api/results/{id}/... serves them; / is the page; /docs the OpenAPI docs.

Safety: uploads are capped in bytes (checked while the body streams in) and in pixels (checked from
the image header, before decoding); the content is sniffed by Pillow, never trusted from the name or
the declared type; at most `max_concurrent` reconstructions run at once in a thread pool, at most
`queue_size` more wait, and any further request gets 503 with Retry-After; results live in memory
under random ids for `ttl_s` seconds. No user-supplied text ever becomes a path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import math
import re
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import HTTPException, RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from facevox.errors import FacevoxError, NoFaceError, NotAnImageError, TooManyPixelsError
from facevox.web.site import ISOLATION_HEADERS, device_model_files
from facevox.web.store import Result, ResultExpired, ResultMissing, ResultStore

log = logging.getLogger("facevox.web")
STATIC = Path(__file__).parent / "static"
DOWNLOADS = ("glb", "obj", "stl", "ply", "json")  # the order the page shows them
PREVIEW_SIDE = 1280  # the photo the page shows is at most this many pixels on its longer side
ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
MB = 1_000_000


class ApiError(HTTPException):
    """An error the page shows as is: status, a short machine code, and one sentence for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


def create_app(
    reconstructor=None,
    max_concurrent: int = 2,
    queue_size: int = 8,
    ttl_s: float = 1800.0,
    max_upload_bytes: int = 15 * MB,
    max_pixels: int = 50 * MB,
    max_store_bytes: int = 1_000 * MB,
) -> FastAPI:
    """The app. `reconstructor`: anything with `.reconstruct(image, all_faces=True) -> list[Face]`
    (default: a `facevox.Reconstructor` with solid bodies for STL, loaded once at start-up)."""
    if max_concurrent < 1 or queue_size < 0:
        raise ValueError("max_concurrent must be at least 1 and queue_size at least 0")
    state = _State(reconstructor, max_concurrent, queue_size, ttl_s, max_upload_bytes, max_pixels, max_store_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = asyncio.create_task(_sweep_forever(state.store, max(1.0, min(60.0, ttl_s / 4))))
        try:
            if state.reconstructor is None:
                await asyncio.get_running_loop().run_in_executor(state.executor, state.load_default)
            yield
        finally:
            sweeper.cancel()
            state.executor.shutdown(wait=False, cancel_futures=True)
            state.store.clear()

    from facevox import __version__

    app = FastAPI(
        title="facevox", version=__version__, lifespan=lifespan,
        description="One photo of a face in, a 3D model of that face out. Upload a photo to "
                    "`/api/reconstruct`; download each face's mesh from the URLs in the answer.",
    )
    app.state.facevox = state
    app.add_middleware(StaticGZip)
    app.add_middleware(CrossOriginIsolation)
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes, paths={"/api/reconstruct"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = getattr(error, "code", None) or _CODES.get(error.status_code, "error")
        return _error_response(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in error.errors()) or "request"
        return _error_response(400, "bad_request", f"Bad request ({where}).")

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error_response(500, "internal", "Something went wrong on the server; please try again.")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/config", summary="Limits and formats, for clients")
    async def config():
        return {
            "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "formats": list(DOWNLOADS),
            "ttl_s": ttl_s, "ready": state.reconstructor is not None,
        }

    @app.post(
        "/api/reconstruct", summary="Reconstruct every face in a photo",
        responses={400: {"description": "Empty, damaged or missing upload"}, 413: {"description": "Too large (bytes or pixels)"},
                   415: {"description": "Not an image"}, 422: {"description": "No face found"},
                   503: {"description": "Busy (see Retry-After) or still starting"}},
    )
    async def reconstruct(request: Request, photo: UploadFile | None = File(None, description="The photo (JPEG, PNG, WebP, HEIC…)")):
        if photo is None or isinstance(photo, str):
            raise ApiError(400, "no_photo", "Send the photo as the multipart form field 'photo'.")
        data = await photo.read()
        name = _safe_stem(photo.filename)
        await photo.close()
        if not data:
            raise ApiError(400, "empty", "The file is empty.")
        if len(data) > max_upload_bytes:
            raise _too_large(len(data), max_upload_bytes)
        await run_in_threadpool(_sniff, data, max_pixels)
        result = await state.run(lambda: _reconstruct(state.reconstructor, data, max_pixels, name))
        state.store.put(result)
        return _with_urls(request, result)

    def lookup(result_id: str) -> Result:
        if not re.match(ID_PATTERN, result_id):
            raise ApiError(404, "not_found", "No such result.")
        try:
            return state.store.get(result_id)
        except ResultExpired:
            raise ApiError(410, "expired", "This result has expired; upload the photo again.") from None
        except ResultMissing:
            raise ApiError(404, "not_found", "No such result (it may have expired); upload the photo again.") from None

    @app.get("/api/results/{result_id}", summary="The answer of an earlier reconstruction")
    async def result_summary(request: Request, result_id: str):
        return _with_urls(request, lookup(result_id))

    @app.get("/api/results/{result_id}/{file_name}", summary="A file of a result: photo.jpg, faceN.FORMAT or faceN.surface.FORMAT")
    async def result_file(result_id: str, file_name: str, download: bool = False):
        result = lookup(result_id)
        entry = result.files.get(file_name)  # a dictionary key, never a path
        if entry is None:
            raise ApiError(404, "not_found", "No such file in this result.")
        data, media_type = entry
        headers = {"Cache-Control": "private, max-age=600"}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{result.summary["name"]}_{file_name}"'
        return Response(data, media_type=media_type, headers=headers)

    model_files = device_model_files()

    @app.get("/models/{name}", include_in_schema=False)
    async def model_file(name: str):
        path = model_files.get(name)  # a dictionary key, never a path
        if path is None:
            raise ApiError(404, "not_found", "No such model file.")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class _State:
    def __init__(self, reconstructor, max_concurrent, queue_size, ttl_s, max_upload_bytes, max_pixels, max_store_bytes):
        self.reconstructor = reconstructor
        self.max_concurrent, self.queue_size = max_concurrent, queue_size
        self.store = ResultStore(ttl_s, max_store_bytes)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_concurrent, thread_name_prefix="facevox-reconstruct")
        self.pending = 0  # running + waiting; changed only under the lock
        self.lock = threading.Lock()
        self.seconds_per_job = 2.0  # running average, for Retry-After

    def load_default(self) -> None:
        from facevox.api import Reconstructor, Settings

        self.reconstructor = Reconstructor(settings=Settings(solid=True))

    def retry_after(self) -> int:
        return int(min(120, max(1, math.ceil(self.seconds_per_job * (self.pending / self.max_concurrent)))))

    async def run(self, job):
        """Run a blocking job in the pool, or refuse at once (503) when the pool and its queue are full."""
        if self.reconstructor is None:
            raise ApiError(503, "starting", "The server is still starting; try again in a few seconds.", {"Retry-After": "5"})
        with self.lock:
            if self.pending >= self.max_concurrent + self.queue_size:
                busy = ApiError(503, "busy", "The server is busy with other photos; please try again shortly.",
                                {"Retry-After": str(self.retry_after())})
            else:
                busy = None
                self.pending += 1
        if busy:
            raise busy

        def timed():
            start = time.perf_counter()
            try:
                return job()
            finally:
                self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - start)

        try:
            future = self.executor.submit(timed)
        except RuntimeError:  # shutting down
            self._release()
            raise ApiError(503, "stopping", "The server is stopping.") from None
        future.add_done_callback(lambda _: self._release())  # counts the job until it really ends
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self.lock:
            self.pending -= 1


class StaticGZip:
    """Gzip the page and its scripts (three.js: 2 MB → 0.4 MB), not the meshes: compressing those would
    hold up the event loop for little gain (GLB, PLY and STL are binary); nor onnxruntime-web's 15 MB of
    WebAssembly, which would hold it up for about a second at each first visit."""

    def __init__(self, app):
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=2048, compresslevel=6)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/" or path.startswith("/static/")) and not path.endswith(".wasm"):
            return await self.gzip(scope, receive, send)
        return await self.app(scope, receive, send)


class CrossOriginIsolation:
    """ASGI middleware: the page, its scripts and the models are served with the headers that make the
    page cross-origin isolated, so that onnxruntime-web may run the in-browser pipeline on several threads."""

    HEADERS = [(name.lower().encode(), value.encode()) for name, value in ISOLATION_HEADERS.items()]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(("/static/", "/models/"))):
            return await self.app(scope, receive, send)

        async def send_isolated(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *self.HEADERS])
            return await send(message)

        await self.app(scope, receive, send_isolated)


class UploadLimit:
    """ASGI middleware: refuse request bodies over max_bytes on some paths, before or while they arrive."""

    SLACK = 64 * 1024  # multipart headers around the file

    def __init__(self, app, max_bytes: int, paths: set[str]):
        self.app, self.max_bytes, self.paths = app, max_bytes + self.SLACK, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = _error_response(413, "too_large", _too_large(int(declared), self.max_bytes - self.SLACK).detail,
                                       {"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(received, self.max_bytes - self.SLACK)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "too_large", f"The file is too large ({_mb(size)}); the limit is {_mb(limit)}.")


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB" if n < 10 * MB else f"{n / MB:.0f} MB"


def _sniff(data: bytes, max_pixels: int) -> None:
    """Is it an image, and not too many pixels? From the header only (no decoding yet)."""
    from facevox.image import open_image

    try:
        open_image(data, max_pixels).close()
    except NotAnImageError:
        raise ApiError(415, "not_an_image", "This file is not an image facevox can read; send a JPEG, PNG, WebP or HEIC photo.") from None
    except TooManyPixelsError as error:
        if error.size is None:
            raise ApiError(413, "too_many_pixels", f"The photo has far too many pixels; the limit is {max_pixels / MB:g} megapixels.") from None
        width, height = error.size
        raise ApiError(413, "too_many_pixels",
                       f"The photo has too many pixels ({width}×{height}); the limit is {max_pixels / MB:g} megapixels.") from None
    except Exception:  # DamagedImageError, or a header so broken that Pillow gives up otherwise
        raise ApiError(400, "damaged", "The image is damaged or truncated.") from None


def _reconstruct(reconstructor, data: bytes, max_pixels: int, name: str) -> Result:
    """Decode, reconstruct and export (runs in the pool). Raises ApiError for the user's mistakes."""
    import numpy as np
    from PIL import Image

    from facevox.errors import DamagedImageError
    from facevox.export import MEDIA_TYPES, export
    from facevox.image import PhotoFile, reduction_for

    try:
        file = PhotoFile(data, max_pixels=max_pixels)
        faces = reconstructor.reconstruct(file, all_faces=True)
        preview = Image.fromarray(file.decode(reduction_for(max(file.size), PREVIEW_SIDE)).pixels)
    except DamagedImageError:
        raise ApiError(400, "damaged", "The image is damaged or truncated.") from None
    except NoFaceError:
        raise ApiError(422, "no_face", "No face was found in this photo. Try a clear, well-lit photo where the face is visible.") from None
    except FacevoxError as error:
        raise ApiError(400, "bad_image", f"This photo cannot be used: {error}.") from None
    if not faces:
        raise ApiError(422, "no_face", "No face was found in this photo. Try a clear, well-lit photo where the face is visible.")

    width, height = file.size
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=85)
    files = {"photo.jpg": (buffer.getvalue(), "image/jpeg")}

    model = getattr(getattr(reconstructor, "model", None), "info", {}).get("name")
    entries = []
    for index, face in enumerate(faces):
        meshes = {}
        # the head's files are faceN.FMT, the surface's faceN.surface.FMT (faceN.FMT when there is no head)
        for which, suffix in ([("head", "")] if face.head is not None else []) + [("surface", ".surface" if face.head is not None else "")]:
            urls = {}
            for fmt in DOWNLOADS:
                file_name = f"face{index + 1}{suffix}.{fmt}"
                try:
                    files[file_name] = (export(face, fmt, model=model, mesh=which), MEDIA_TYPES[fmt])
                    urls[fmt] = file_name
                except ValueError:  # the surface's STL without a solid body (a reconstructor without Settings(solid=True))
                    log.warning("no %s %s for face %d", which, fmt, index + 1)
            body = face.head if which == "head" else face.mesh
            meshes[which] = {"files": urls, "bytes": {fmt: len(files[name][0]) for fmt, name in urls.items()},
                             "vertices": int(len(body.vertices)), "triangles": int(len(body.faces if which == "head" else body.triangles))}
        if face.head is not None:
            from facevox.export.head import arkit_names

            meshes["head"]["expression"] = {n: round(float(w), 4) for n, w in zip(arkit_names(face.head.blendshape_names), face.head.expression)}
        from facevox.pose import rotation_matrix

        main = meshes["head" if face.head is not None else "surface"]
        entries.append({
            "index": index,
            "box": [round(float(v), 2) for v in face.box],
            "score": round(float(face.score), 4),
            "pose": {"yaw": round(float(face.yaw), 2), "pitch": round(float(face.pitch), 2), "roll": round(float(face.roll), 2)},
            # the rotation from a frontal face to this one, in the files' frame (y up, z towards the viewer)
            "rotation": np.round(rotation_matrix(face.yaw, face.pitch, face.roll), 5).tolist(),
            "landmarks_2d": np.round(np.asarray(face.landmarks_2d, dtype=float), 2).tolist(),
            "mesh": {"vertices": int(len(face.mesh.vertices)), "triangles": int(len(face.mesh.triangles))},
            "files": main["files"],  # the head's when there is one, else the surface's
            "bytes": main["bytes"],
            "meshes": meshes,
        })
    summary = {"name": name, "photo": {"width": int(width), "height": int(height), "file": "photo.jpg"}, "faces": entries}
    return Result(summary=summary, files=files)


def _with_urls(request: Request, result: Result) -> dict:
    """The summary with absolute URLs (and the id and expiry) added."""
    base = request.scope.get("root_path", "") + request.app.url_path_for("result_summary", result_id=result.id)
    summary = result.summary
    store = request.app.state.facevox.store
    faces = []
    for face in summary["faces"]:
        face = dict(face)
        face["files"] = {fmt: f"{base}/{name}" for fmt, name in face["files"].items()}
        face["meshes"] = {which: dict(entry, files={fmt: f"{base}/{name}" for fmt, name in entry["files"].items()})
                          for which, entry in face["meshes"].items()}
        faces.append(face)
    return {
        "id": result.id,
        "expires_in_s": max(0, round(store.ttl_s - (store.clock() - result.created))),
        "photo": {"width": summary["photo"]["width"], "height": summary["photo"]["height"], "url": f"{base}/photo.jpg"},
        "faces": faces,
    }


def _safe_stem(filename: str | None) -> str:
    """A file-name stem for downloads, made of safe characters only (it never touches the filesystem)."""
    stem = Path(filename or "").name.rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40]
    return stem or "face"


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 410: "expired", 413: "too_large",
          415: "not_an_image", 422: "no_face", 503: "busy"}


def _error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": message, "status": status}, status_code=status, headers=headers)


async def _sweep_forever(store: ResultStore, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        store.sweep()
