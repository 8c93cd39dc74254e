"""The ``vs-vgan`` command (also ``python -m vs_vgan``).

    vs-vgan upconvert INPUT -o OUTPUT [--fps 60000/1001 | --factor 2] [--model M] [--scale 0.5]
    vs-vgan extend INPUT -o OUTPUT --frames 24 [--side end|start|both]
    vs-vgan repair INPUT -o OUTPUT [--duplicates] [--frames 10,11]
    vs-vgan info INPUT [--fps R | --factor R]
    vs-vgan models
    vs-vgan demo [-o OUTPUT]          (the README's main job)

INPUT is anything the source plugin reads (bestsource by default).  The frames go through
the vs_vgan node inside a VapourSynth graph and, as y4m, into ffmpeg, which encodes them
(``--codec``, ``--crf``, ``--preset``, ``--ffmpeg-args`` for anything else) and copies
INPUT's audio (and, into .mkv, its subtitles), shifted by the frames ``extend`` adds at the
start, so that they stay in sync.  ffmpeg writes a hidden temporary file next to OUTPUT,
renamed to OUTPUT only when everything succeeded: an interrupted or failed run leaves no
OUTPUT behind and says why.

Exit codes: 0 done; 1 failed (unreadable input, bad value, encoder error); 2 wrong usage;
3 a missing tool (ffmpeg, the source plugin); 4 OUTPUT exists (pass --overwrite);
130 interrupted (Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING, EXIT_EXISTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class CliError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- sources and formats
def open_source(path: str, source: str = "bs.VideoSource"):
    """INPUT through a VapourSynth source filter ``namespace.Function``."""
    import vapoursynth as vs

    if not Path(path).exists():
        raise CliError(f"vs-vgan: INPUT {path!r} does not exist")
    namespace, _, name = source.partition(".")
    plugin = getattr(vs.core, namespace, None)
    if plugin is None or not hasattr(plugin, name):
        hint = "pip install vapoursynth-bestsource" if namespace == "bs" else f"install the plugin that provides {source}"
        raise CliError(f"vs-vgan: the source filter {source} is not available; {hint}", EXIT_MISSING)
    try:
        clip = getattr(plugin, name)(str(path))
    except vs.Error as err:
        raise CliError(f"vs-vgan: can't read INPUT {path!r} with {source}: {str(err).strip().splitlines()[-1]}") from None
    if isinstance(clip, (list, tuple)):
        clip = clip[0]
    if clip.format is None or clip.width == 0:
        raise CliError(f"vs-vgan: INPUT {path!r} changes format or size mid-stream; convert it first")
    return clip


def for_y4m(clip):
    """y4m carries GRAY and YUV with 8 to 16-bit integer samples: convert anything else
    (RGB to YUV 4:4:4 with the BT.709 matrix, float to 16-bit)."""
    import vapoursynth as vs

    fmt = clip.format
    bits = fmt.bits_per_sample if fmt.sample_type == vs.INTEGER else 16
    if fmt.color_family == vs.RGB:
        target = vs.core.query_video_format(vs.YUV, vs.INTEGER, bits, 0, 0)
        return vs.core.resize.Bicubic(clip, format=target.id, matrix_s="709")
    if fmt.sample_type == vs.FLOAT:
        return vs.core.resize.Point(clip, format=fmt.replace(sample_type=vs.INTEGER, bits_per_sample=16).id)
    return clip


def describe(clip) -> dict[str, Any]:
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    return dict(format=clip.format.name, width=clip.width, height=clip.height, frames=clip.num_frames,
                fps=str(fps) if fps else "variable", duration=float(clip.num_frames / fps) if fps else None)


# ---------------------------------------------------------------------- progress
class Progress:
    """A one-line progress bar on stderr: frames done and total, frames/s, ETA."""

    def __init__(self, label: str, quiet: bool = False, stream=None) -> None:
        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        fill = int(width * done / max(total, 1))
        line = (f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} frames "
                f"{rate:6.2f} fps  ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        self.stream.write(line + ("\n" if done >= total else ""))
        self.stream.flush()


# ---------------------------------------------------------------------- encoding
def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if not path:
        raise CliError("vs-vgan: ffmpeg is not installed; install it (Debian/Ubuntu: apt-get install ffmpeg)",
                       EXIT_MISSING)
    return path


@contextlib.contextmanager
def _partial(output: Path) -> Iterator[Path]:
    """A hidden temporary path next to ``output``: renamed to ``output`` when the block
    ends normally, removed when it raises (or is interrupted)."""
    tmp = output.with_name(f".{output.stem}.vs-vgan-partial-{os.getpid()}{output.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)


def encode(clip, source_path: str, output: Path, *, codec: str, crf: int | None, preset: str | None,
           audio_codec: str, extra: Sequence[str], overwrite: bool, audio_offset: float = 0.0,
           progress: Callable[[int, int], None] | None = None) -> None:
    """Pipe ``clip`` as y4m into ffmpeg, with INPUT's audio (and subtitles for .mkv)
    copied, into a temporary file renamed to ``output`` on success."""
    if output.exists() and not overwrite:
        raise CliError(f"vs-vgan: OUTPUT {str(output)!r} exists; pass --overwrite to replace it", EXIT_EXISTS)
    if output.parent and not output.parent.exists():
        raise CliError(f"vs-vgan: the folder of OUTPUT {str(output.parent)!r} does not exist")
    if Fraction(clip.fps.numerator, clip.fps.denominator) == 0:
        raise CliError("vs-vgan: the result has a variable frame rate, which y4m can't carry; "
                       "make INPUT constant-rate first (or use --fps)")
    ffmpeg = ffmpeg_path()
    with _partial(output) as tmp:
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe", "-i", "pipe:0"]
        if audio_offset:
            cmd += ["-itsoffset", f"{audio_offset:.6f}"]
        cmd += ["-i", str(source_path), "-map", "0:v:0", "-map", "1:a?"]
        if output.suffix.lower() == ".mkv":
            cmd += ["-map", "1:s?", "-c:s", "copy"]
        cmd += ["-c:v", codec]
        if crf is not None:
            cmd += ["-crf", str(crf)]
        if preset:
            cmd += ["-preset", preset]
        cmd += ["-c:a", audio_codec, *extra, str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            try:
                for_y4m(clip).output(proc.stdin, y4m=True, progress_update=progress)
            except BrokenPipeError:
                pass  # ffmpeg stopped reading: its own message says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            err = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait() != 0:
                raise CliError(f"vs-vgan: ffmpeg failed ({proc.returncode}): "
                               f"{err.splitlines()[-1] if err else 'no message'}\n  command: {shlex.join(cmd)}")
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise


# ---------------------------------------------------------------------- commands
def _rational(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or num/den fraction") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _frame_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of frame numbers") from None


def _node_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"device": a.device}
    if getattr(a, "precision", "auto") != "auto":
        kw["precision"] = a.precision
    if getattr(a, "model", None):
        kw["model"] = a.model
    if getattr(a, "scale", None) is not None:
        kw["scale"] = a.scale
    if getattr(a, "no_scene_detect", False):
        kw["scene_detect"] = False
    elif getattr(a, "scene_threshold", None) is not None:
        kw["scene_threshold"] = a.scene_threshold
    return kw


def _conversion(a: argparse.Namespace) -> dict[str, Any]:
    if a.fps is not None:
        return {"fps": a.fps}
    return {"factor": a.factor if a.factor is not None else Fraction(2)}


def cmd_upconvert(a: argparse.Namespace) -> int:
    import vs_vgan

    clip = open_source(a.input, a.source)
    speed = {"num_streams": a.num_streams} if a.num_streams is not None else {}
    if a.compile:
        speed["compile"] = True
    out = vs_vgan.interpolate(clip, **_conversion(a), **_node_kwargs(a), **speed)
    return _encode(a, out, f"upconvert {Path(a.input).name}")


def cmd_extend(a: argparse.Namespace) -> int:
    import vs_vgan

    clip = open_source(a.input, a.source)
    out = vs_vgan.extend(clip, frames=a.frames, side=a.side, **_node_kwargs(a))
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    offset = float(a.frames / fps) if a.side in ("start", "both") and fps else 0.0
    return _encode(a, out, f"extend {Path(a.input).name}", audio_offset=offset)


def cmd_repair(a: argparse.Namespace) -> int:
    import vs_vgan

    clip = open_source(a.input, a.source)
    kw = _node_kwargs(a)
    if a.predict_model:
        kw["predict_model"] = a.predict_model
    out = vs_vgan.repair(clip, frames=a.frames, duplicates=a.duplicates, threshold=a.threshold, **kw)
    return _encode(a, out, f"repair {Path(a.input).name}")


def _encode(a: argparse.Namespace, out, label: str, audio_offset: float = 0.0) -> int:
    extra = shlex.split(a.ffmpeg_args) if a.ffmpeg_args else []
    encode(out, a.input, Path(a.output), codec=a.codec, crf=a.crf, preset=a.preset, audio_codec=a.audio_codec,
           extra=extra, overwrite=a.overwrite, audio_offset=audio_offset, progress=Progress(label, a.quiet))
    if not a.quiet:
        print(f"vs-vgan: wrote {a.output} ({out.num_frames} frames at {out.fps})", file=sys.stderr)
    return EXIT_OK


def cmd_info(a: argparse.Namespace) -> int:
    from .timing import resolve_ratio

    clip = open_source(a.input, a.source)
    info = {"input": describe(clip)}
    src_fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    if a.fps is not None or a.factor is not None:
        try:
            ratio, out_fps = resolve_ratio(src_fps, func="info", **_conversion(a))
        except (TypeError, ValueError) as err:
            raise CliError(f"vs-vgan: {err}") from None
        frames = -(-clip.num_frames * ratio.numerator // ratio.denominator)
        info["output"] = dict(frames=frames, fps=str(out_fps) if out_fps else "variable", ratio=str(ratio))
    print(json.dumps(info, indent=1) if a.json else _info_text(info))
    return EXIT_OK


def _info_text(info: dict) -> str:
    i = info["input"]
    lines = [f"input:  {i['width']}x{i['height']} {i['format']}, {i['frames']} frames at {i['fps']} fps"
             + (f" ({i['duration']:.3f} s)" if i["duration"] else "")]
    if "output" in info:
        o = info["output"]
        lines.append(f"output: {o['frames']} frames at {o['fps']} fps (x{o['ratio']})")
    return "\n".join(lines)


def cmd_models(a: argparse.Namespace) -> int:
    from .models import DEFAULT_INTERPOLATION_MODEL, DEFAULT_PREDICTION_MODEL, list_models

    for spec in list_models():
        default = " (default)" if spec.name in (DEFAULT_INTERPOLATION_MODEL, DEFAULT_PREDICTION_MODEL) else ""
        print(f"{spec.name}{default}  [{spec.task}, {spec.arch}]\n    {spec.description}")
    return EXIT_OK


def cmd_demo(a: argparse.Namespace) -> int:
    """The README's main job: vspipe runs the package's demo.vpy (the bundled sample at
    ``--factor``) and streams y4m into ffmpeg (H.264 in Matroska), or into a .y4m file
    without ffmpeg (or with --no-ffmpeg)."""
    script = Path(__file__).resolve().parent / "data" / "demo.vpy"
    vspipe = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or shutil.which("vspipe")
    if vspipe is None:
        raise CliError("vs-vgan: vspipe not found; pip install vapoursynth (then run `vapoursynth config`), "
                       "or use scripts/demo.sh, which sets both up", EXIT_MISSING)
    ffmpeg = None if a.no_ffmpeg else shutil.which("ffmpeg")
    output = Path(a.output) if a.output else Path("out") / ("demo_2x.mkv" if ffmpeg else "demo_2x.y4m")
    output.parent.mkdir(parents=True, exist_ok=True)
    vsargs = ["-a", f"factor={a.factor}", "-a", f"device={a.device}"] + (["-a", f"model={a.model}"] if a.model else [])
    start = time.perf_counter()
    progress = [] if a.quiet else ["-p"]
    with _partial(output) as tmp:
        if ffmpeg:
            pipe = subprocess.Popen([vspipe, "-c", "y4m", *progress, *vsargs, str(script), "-"], stdout=subprocess.PIPE)
            enc = subprocess.run([ffmpeg, "-hide_banner", "-v", "error", "-y", "-i", "-", "-c:v", "libx264",
                                  "-crf", "16", "-preset", "medium", "-pix_fmt", "yuv420p", "-f", "matroska",
                                  str(tmp)], stdin=pipe.stdout)
            pipe.stdout.close()
            rc = pipe.wait() or enc.returncode
        else:
            print("vs-vgan demo: ffmpeg not found, writing raw y4m (apt-get install ffmpeg for H.264 output)",
                  file=sys.stderr)
            rc = subprocess.run([vspipe, "-c", "y4m", *progress, *vsargs, str(script), str(tmp)]).returncode
        if rc != 0:
            raise CliError(f"vs-vgan demo: failed (exit {rc}); no output written")
    print(f"vs-vgan demo: wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vs-vgan", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, output: bool = True, input_: bool = True) -> None:
        if input_:
            p.add_argument("input", metavar="INPUT", help="a video file the source plugin reads")
        if output:
            p.add_argument("-o", "--output", required=input_, metavar="OUTPUT", help="the file to write")
            p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            p.add_argument("--codec", default="libx264", help="ffmpeg video encoder (default libx264)")
            p.add_argument("--crf", type=int, default=18, help="encoder quality (default 18; lower is better)")
            p.add_argument("--preset", default="medium", help="encoder preset (default medium)")
            p.add_argument("--audio-codec", default="copy", help="ffmpeg audio encoder (default copy)")
            p.add_argument("--ffmpeg-args", help="more ffmpeg output options, as one string "
                           "(e.g. \"-pix_fmt yuv420p10le -tune animation\")")
            p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
            p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                           help="network precision (default auto; fp16 is the fast one on GPUs)")
            p.add_argument("--scale", type=float, help="analysis scale 1, 0.5 or 0.25 (faster)")
            p.add_argument("--scene-threshold", type=float, help="scene-cut sensitivity in (0, 1]")
            p.add_argument("--no-scene-detect", action="store_true", help="no scene-cut detection")
        p.add_argument("--source", default="bs.VideoSource", help="VapourSynth source filter (default bs.VideoSource)")

    def rate(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--fps", type=_rational, help="target rate, e.g. 60000/1001")
        g.add_argument("--factor", type=_rational, help="rate factor, e.g. 2 or 5/2 (default 2)")

    p = sub.add_parser("upconvert", help="frame-rate conversion (vs_vgan.interpolate) into a file")
    common(p)
    rate(p)
    p.add_argument("--model", help="interpolation model (vs-vgan models lists them)")
    p.add_argument("--num-streams", type=int, help="frames computed at once (default: per device, see the README)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (for GPUs; slow first frames)")
    p.set_defaults(func=cmd_upconvert)

    p = sub.add_parser("extend", help="append predicted frames (vs_vgan.extend)")
    common(p)
    p.add_argument("--frames", type=int, required=True, help="how many frames to add")
    p.add_argument("--side", choices=("end", "start", "both"), default="end")
    p.add_argument("--model", help="prediction model")
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("repair", help="rebuild repeated or listed frames (vs_vgan.repair)")
    common(p)
    p.add_argument("--frames", type=_frame_list, help="frame numbers to rebuild, comma separated")
    p.add_argument("--duplicates", action="store_true", help="find and rebuild frames repeating their predecessor")
    p.add_argument("--threshold", type=float, default=0.002, help="duplicate threshold (mean abs luma difference)")
    p.add_argument("--model", help="interpolation model")
    p.add_argument("--predict-model", help="prediction model (where no good frame follows)")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("info", help="the source's format, rate and length, and what a conversion would give")
    common(p, output=False)
    rate(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="the registered models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="the README's main job: the bundled sample at twice its rate, through vspipe")
    p.add_argument("--factor", default="2", help='frame-rate factor, e.g. 2 or "5/2" (default 2)')
    p.add_argument("--model", help="interpolation model (default: the package default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-o", "--output", help="output file (default out/demo_2x.mkv, out/demo_2x.y4m without ffmpeg); "
                   "an existing one is replaced")
    p.add_argument("--no-ffmpeg", action="store_true", help="write raw y4m even when ffmpeg is present")
    p.add_argument("--quiet", action="store_true", help="no progress from vspipe")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)

    def terminate(signum, frame):  # SIGTERM: the same clean-up as Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return a.func(a)
    except CliError as err:
        print(str(err), file=sys.stderr)
        return err.code
    except (TypeError, ValueError) as err:  # the nodes' argument errors, already worded for users
        print(f"vs-vgan: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nvs-vgan: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
