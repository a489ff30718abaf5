"""Frames for the board demos: a camera (picamera2), a video file, a folder of images or one
image, classified one by one with latency and frames per second, and the command line the
demos share. numpy and Pillow only (the device profile); OpenCV for video formats Pillow
cannot read, picamera2 for the camera."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from ..artifact.labels import read_labels
from ..errors import EdgeVitError, InputError, MissingDependencyError, first_line
from ..optional import require
from ..paths import ensure_writable_dir, publish, staged_path
from .predict import top_classes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ANIMATED_SUFFIXES = (".gif",)  # read frame by frame with Pillow
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".h264", ".webm")  # OpenCV
CAMERA = "camera"


@dataclass(frozen=True)
class Frame:
    """One RGB frame (H x W x 3 uint8) and where it came from."""

    name: str
    pixels: np.ndarray


def open_frames(source: str | Path, limit: int | None = None) -> Iterator[Frame]:
    """Frames from ``source``: ``"camera"`` (picamera2), ``/dev/videoN`` (a USB camera), a
    video file, a folder of images (sorted by name) or one image; at most ``limit`` of them."""
    if limit is not None and limit < 1:
        raise InputError("--frames must be at least 1")
    frames = _camera() if str(source) == CAMERA else _from_path(Path(source))
    for count, frame in enumerate(frames, 1):
        yield frame
        if limit is not None and count >= limit:
            return


def _from_path(path: Path) -> Iterator[Frame]:
    if str(path).startswith("/dev/video"):  # a USB (V4L2) camera
        yield from _video(path)
        return
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + ANIMATED_SUFFIXES)
        if not images:
            raise InputError(f"no images in {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
        for image in images:
            yield from _image_frames(image, one=True)
        return
    if not path.is_file():
        raise InputError(f"no such camera, video, folder or image: {path} (use 'camera' for the Pi camera)")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        yield from _video(path)
    elif suffix in IMAGE_SUFFIXES + ANIMATED_SUFFIXES:
        yield from _image_frames(path, one=suffix not in ANIMATED_SUFFIXES)
    else:
        raise InputError(f"{path.name}: not an image ({', '.join(IMAGE_SUFFIXES)}) or a video "
                         f"({', '.join(ANIMATED_SUFFIXES + VIDEO_SUFFIXES)})")


def _image_frames(path: Path, one: bool) -> Iterator[Frame]:
    """The image at ``path`` (``one``), or every frame of an animated image."""
    require("PIL", "to read images")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = [img] if one else ImageSequence.Iterator(img)
            for index, frame in enumerate(frames):
                name = path.name if one else f"{path.name}#{index}"
                yield Frame(name, np.asarray(frame.convert("RGB")))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {first_line(exc)}") from None


def _video(path: Path) -> Iterator[Frame]:
    """Every frame of a video file or a V4L2 camera (``/dev/videoN``), through OpenCV."""
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("opencv-python-headless", None, f"to read {path.name}: pip install "
                                     "opencv-python-headless (a video file may instead be converted to a .gif, "
                                     "which Pillow reads)") from None
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f"cannot open video {path} (OpenCV cannot decode it)")
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(f"{path.name}#{index}", np.ascontiguousarray(bgr[:, :, ::-1]))
            index += 1
        if index == 0:
            raise InputError(f"video {path} has no frames OpenCV can decode")
    finally:
        capture.release()


def _camera() -> Iterator[Frame]:
    try:
        from picamera2 import Picamera2  # Raspberry Pi OS: apt install python3-picamera2
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "picamera2", None, "to read the Raspberry Pi camera: sudo apt install python3-picamera2, and make "
            "the venv with --system-site-packages") from None
    except Exception as exc:  # e.g. numpy 2 in the venv next to apt's picamera2, built for numpy 1.x
        raise InputError(f"picamera2 is installed but fails to import ({first_line(exc)}); with apt's "
                         "picamera2, keep numpy below 2 in the venv: pip install \"numpy<2\"") from None
    try:
        camera = Picamera2()
        camera.configure(camera.create_preview_configuration(main={"format": "RGB888", "size": (640, 480)}))
        camera.start()
    except Exception as exc:  # no camera on the connector, or one that another program holds
        raise InputError(f"cannot open the Raspberry Pi camera: {first_line(exc)} (is it connected? "
                         "rpicam-hello tests it)") from None
    try:
        index = 0
        while True:
            try:
                bgr = camera.capture_array()
            except Exception as exc:  # unplugged, or a capture timeout
                raise InputError(f"the Raspberry Pi camera stopped: {first_line(exc)}") from None
            # picamera2's "RGB888" is B, G, R in memory (libcamera's naming): reversed to RGB
            yield Frame(f"camera#{index}", np.ascontiguousarray(bgr[:, :, ::-1]))
            index += 1
    finally:
        camera.stop()


@dataclass
class StreamStats:
    """Inference latency per frame and the end-to-end rate (reading and framing included)."""

    latencies_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies_ms or [np.nan])
        wall = (self.finished or time.perf_counter()) - self.started
        return {"frames": len(self.latencies_ms), "median_ms": round(float(np.median(ms)), 3),
                "p90_ms": round(float(np.percentile(ms, 90)), 3),
                "fps": round(len(self.latencies_ms) / wall, 2) if wall > 0 else None}


def classify_stream(runtime, frames: Iterator[Frame], *, top_k: int = 3, labels: list[str] | None = None,
                    resize: str = "crop", on_frame: Callable[[dict[str, Any]], None] | None = None
                    ) -> tuple[StreamStats, dict[str, np.ndarray]]:
    """Classify every frame with ``runtime`` (an :func:`edgevit.load` result) until the frames
    end or Ctrl-C; ``on_frame`` gets each result (name, top classes, latency). Returns the
    stats and the scores by frame."""

    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    labels = labels or (runtime.metadata.labels if runtime.metadata else None)
    kind = runtime.metadata.output_kind if runtime.metadata else "logits"
    stats, scores = StreamStats(), {}
    try:
        for frame in frames:
            x = runtime.prepare(frame.pixels, resize)
            start = time.perf_counter()
            out = np.asarray(runtime.run(x), dtype=np.float32).reshape(-1)
            latency = (time.perf_counter() - start) * 1000
            stats.latencies_ms.append(latency)
            scores[frame.name] = out
            if on_frame:
                on_frame({"frame": frame.name, "latency_ms": round(latency, 3),
                          "top": top_classes(out, top_k, labels, kind)})
    except KeyboardInterrupt:  # how a camera run ends: the frames so far still count
        pass
    finally:
        if hasattr(frames, "close"):
            frames.close()  # a camera is stopped
    stats.finished = time.perf_counter()
    if not stats.latencies_ms:
        raise InputError("the source gave no frames")
    return stats, scores


def run_demo(runtime, source: str, *, top_k: int = 3, labels: list[str] | None = None, limit: int | None = None,
             save: Path | None = None, as_json: bool = False, out: TextIO | None = None) -> dict[str, Any]:
    """The board demos' loop: classify ``source``'s frames, print one line per frame (JSON
    lines with ``as_json``) and a summary; ``save``: the scores of every frame to an .npz."""
    out = out or sys.stdout
    if save is not None:
        ensure_writable_dir(save.parent if str(save.parent) else Path("."))

    def show(result: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(result), file=out, flush=True)
            return
        best = ", ".join(f"{c['label'] or c['class']} {c['probability']:.2f}" for c in result["top"])
        print(f"{result['frame']}: {best}  ({result['latency_ms']:.1f} ms)", file=out, flush=True)

    stats, scores = classify_stream(runtime, open_frames(source, limit), top_k=top_k, labels=labels, on_frame=show)
    summary = {"backend": runtime.describe(), **stats.summary()}
    if save is not None:
        _save_scores(save, scores)
        summary["saved"] = str(save)
    if as_json:
        print(json.dumps({"summary": summary}), file=out, flush=True)
    else:
        plural = "s" if summary["frames"] != 1 else ""
        print(f"{summary['frames']} frame{plural} on {summary['backend']}: inference median {summary['median_ms']:.2f} ms "
              f"(p90 {summary['p90_ms']:.2f}), {summary['fps']} frames/s end to end", file=out, flush=True)
    return summary


def _save_scores(path: Path, scores: dict[str, np.ndarray]) -> None:
    """names and scores (frames x classes) to ``path`` (.npz), written whole or not at all."""
    with staged_path(path) as staged:
        with open(staged, "wb") as file:  # a file object: numpy adds no .npz suffix to the name
            np.savez(file, names=np.asarray(list(scores)), scores=np.stack(list(scores.values())))
        publish(staged, path)


def demo_parser(description: str, suffix: str) -> argparse.ArgumentParser:
    """The options every board demo has: the ``suffix`` artifact, --top-k, --labels,
    --frames, --save, --json (each demo adds --source and its runtime's options)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", type=Path, help=f"a {suffix} file from edgevit export")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per frame")
    parser.add_argument("--labels", type=Path, help="class names, one per line (default: the model's own)")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--save", type=Path, help="write every frame's scores to this .npz")
    parser.add_argument("--json", action="store_true", help="one JSON line per frame, then a summary")
    parser.set_defaults(suffix=suffix)
    return parser


def demo_main(parser: argparse.ArgumentParser, load: Callable[[argparse.Namespace], Any],
              argv: list[str] | None = None) -> int:
    """Parse ``argv``, load the model with ``load(args)`` and run the demo (Ctrl-C ends it with
    the summary); exit status 0, or 2 with one ``demo: error:`` line for bad input."""
    args = parser.parse_args(argv)
    try:
        if args.model.suffix.lower() != args.suffix:
            raise EdgeVitError(f"{args.model.name}: this demo runs {args.suffix} artifacts "
                               f"(edgevit export --target {args.suffix[1:]})")
        if args.top_k < 1:  # before the model loads
            raise InputError("--top-k must be at least 1")
        labels = read_labels(args.labels)
        runtime = load(args)
        run_demo(runtime, args.source, top_k=args.top_k, labels=labels, limit=args.frames, save=args.save,
                 as_json=args.json)
    except (EdgeVitError, OSError) as exc:  # OSError: e.g. an unwritable TensorRT cache folder
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while loading, before any frame
        return 130
    return 0
