#!/usr/bin/env python3
"""A screenshot of a script open in vspreview, on a virtual X screen (Debian's ``xvfb``).

    .venv/bin/python scripts/preview_shot.py --out docs/preview.png
    .venv/bin/python scripts/preview_shot.py examples/to_59.94.vpy --frame 9 -a scale=0.5 \\
        --out out/shot.png --frame-out out/shown.png --report out/shot.json

Needs the preview extra (``pip install -e ".[preview]"``: vspreview, vsjetpack and PyQt6 at
the versions pyproject.toml pins) and ``Xvfb`` on PATH (``apt-get install xvfb``; Qt's xcb
platform plugin also wants libxcb-icccm4, libxcb-keysyms1, libxcb-cursor0, libxkbcommon-x11-0,
libegl1: ``.ci/run`` installs them).  ``--display`` uses the X display in $DISPLAY instead.

vspreview opens SCRIPT (default ``examples/upconvert_2x.vpy``: twice the frame rate of the
bundled sample, so every odd frame is synthesized) through its own command line
(``vspreview SCRIPT KEY=VALUE... -c``: the working folder stays, as with vspipe, so
relative paths in -a mean the same to both) on an Xvfb screen of ``--screen`` pixels; once its
window is up, at the top-left corner and sized ``--window``, it seeks from the first frame to
FRAME as its timeline and frame box do.  vspreview starts from its defaults (zoom 100 %,
Mitchell chroma upsampling, error-diffusion dither): its global and per-script settings live
in a temporary folder, so nothing is read from or written to ``~/.config/vspreview`` or
beside the script.  When the window has shown FRAME for half a second, it is grabbed from the
X server (what the screen shows, not a re-render) and vspreview is closed.

``--out``: the window as a palette PNG (``--colors`` colours, dithered, optimised; 0: RGB).
``--frame-out``: the video area alone, lossless RGB at the frame's size: the pixels the
preview shows for FRAME, which tests/test_preview.py compares with vspipe's frame.
``--report``: a JSON of the frame shown, the output's size, the video area's place in the
window, the versions and the timings.

Fails (exit 1, the reason on stderr) when vspreview reports an error: a message at level
ERROR or above on its log (script errors, VapourSynth's critical messages), its error dialog,
an exception in the event loop, the window not showing FRAME within ``--timeout`` seconds, or
the frame not wholly visible at 100 % in the window.  Progress on stderr; stdout stays empty.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCRIPT = ROOT / "examples" / "upconvert_2x.vpy"


class PreviewError(RuntimeError):
    """vspreview reported an error, or did not show the frame asked for."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT; got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"expected positive sizes; got {text!r}")
    return w, h


def _key_value(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("script", nargs="?", type=Path, default=DEFAULT_SCRIPT,
                   help="the VapourSynth script to open (default: examples/upconvert_2x.vpy)")
    p.add_argument("--frame", type=int, default=7,
                   help="the frame to show (default 7: synthesized, between source frames 3 and 4)")
    p.add_argument("-a", "--arg", dest="args", action="append", default=[], type=_key_value,
                   metavar="KEY=VALUE", help="a script argument, as vspipe -a (repeatable)")
    p.add_argument("--out", type=Path, help="the window's screenshot (PNG)")
    p.add_argument("--frame-out", type=Path, help="the video area alone, lossless (PNG)")
    p.add_argument("--report", type=Path, help="a JSON of what was shown and where")
    p.add_argument("--colors", type=int, default=256,
                   help="palette colours of --out, dithered (default 256; 0: full RGB)")
    p.add_argument("--screen", type=_size, default=(1280, 800), help="Xvfb's screen (default 1280x800)")
    p.add_argument("--window", type=_size, default=(1040, 640), help="the window (default 1040x640)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds allowed for the script to load and the frame to show (default 180)")
    p.add_argument("--display", action="store_true", help="use $DISPLAY instead of starting Xvfb")
    args = p.parse_args(argv)
    if not (args.out or args.frame_out or args.report):
        p.error("nothing to write: give --out, --frame-out or --report")
    if args.frame < 0:
        p.error(f"--frame must be >= 0; got {args.frame}")
    if not 0 <= args.colors <= 256:
        p.error(f"--colors must be in 0..256; got {args.colors}")
    if not args.script.is_file():
        p.error(f"no such script: {args.script}")
    return args


def start_xvfb(screen: tuple[int, int], timeout: float = 20.0) -> tuple[subprocess.Popen, str, Path]:
    """Xvfb on a free display number (it picks one and writes it to a pipe: -displayfd)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise PreviewError("Xvfb is not on PATH (Debian: apt-get install xvfb), or pass --display")
    log = Path(tempfile.mkstemp(prefix="vs_vgan-xvfb-", suffix=".log")[1])
    read_fd, write_fd = os.pipe()
    with open(log, "wb") as err:
        proc = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{screen[0]}x{screen[1]}x24",
                                 "-nolisten", "tcp"],
                                pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    os.close(write_fd)
    number = b""
    deadline = time.monotonic() + timeout
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                proc.kill()
                proc.wait()
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise PreviewError("Xvfb did not start" + (":\n  " + "\n  ".join(tail) if tail else ""))
            number += chunk
    finally:
        os.close(read_fd)
    return proc, ":" + number.decode().strip(), log


def stop_xvfb(proc: subprocess.Popen, log: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.unlink(missing_ok=True)


class _ErrorLog(logging.Handler):
    """Keeps every record at level ERROR or above: vspreview reports script errors there
    (and prints them on stderr itself, tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")

    def summary(self) -> str:
        """Each message's last line (a traceback's: the exception)."""
        return "vspreview logged an error: " + "; ".join(
            next((line.strip() for line in reversed(m.splitlines()) if line.strip()), m) for m in self.messages)


def shoot(args: argparse.Namespace) -> dict:
    """Open the script in vspreview on the current X display, wait for the frame, grab the
    window; vspreview's own command line does the opening.  Returns the report, with the
    grabbed images under "window_image" and "frame_image" (QImage)."""
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    # Qt Multimedia looks for PipeWire at start-up and says so when it is missing.
    os.environ.setdefault("QT_LOGGING_RULES", "qt.multimedia.*=false")
    # vsjetpack 1.5 says so whenever it converts a colour range for zimg: true, and harmless
    warnings.filterwarnings("ignore", "Starting from R74, VS props values and Zimg", SyntaxWarning)
    from PyQt6.QtCore import QRect, QSize, QTimer
    from PyQt6.QtWidgets import QApplication, QGraphicsPixmapItem

    import vspreview.init as cli
    from vspreview.core import vsenv
    from vspreview.main import MainWindow
    from vspreview.main import window as window_module

    script = args.script.resolve()
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    state: dict = {"failure": None, "report": None, "stable_since": None, "geometry": None, "seeked": False}
    t0 = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="vs_vgan-vspreview-") as config:
        # vspreview's settings in a fresh folder, so that its defaults apply and nothing is
        # left behind: the global ones (~/.config/vspreview) and the per-script storage it
        # keeps in .vsjet/ beside the script, or in the working folder with -c.
        MainWindow.VSP_GLOBAL_DIR_NAME = Path(config)
        MainWindow.global_config_dir = Path(config) / "vspreview"
        MainWindow.global_storage_path = MainWindow.global_config_dir / "global.yml"
        MainWindow.global_plugins_dir = MainWindow.global_config_dir / "plugins"

        class LocalStorage:
            def __init__(self, cwd: object = None, *, package_name: str, mode: int = 0o777) -> None:
                self.folder = Path(config) / "local" / package_name

        window_module.PackageStorage = LocalStorage

        app = QApplication([sys.argv[0]])
        # vspreview's command line creates its QApplication on a first call and reuses one
        # set here (the path of vspreview.api.start_preview), so that the timer below runs
        # inside its event loop.
        cli.main.app = app
        vsenv.set_vsengine_loop()
        # That path makes vspreview a new VapourSynth environment: the one its import made is
        # disposed of once the new one is current (vsengine warns when the current
        # environment is collected unseen, or when another is disposed after it).
        state["initial_environment"] = vsenv.get_current_environment()

        def fail(message: str) -> None:
            if state["failure"] is None:
                state["failure"] = message
            app.exit(1)

        def tick() -> None:
            try:
                if (initial := state.pop("initial_environment", None)) is not None:
                    initial.dispose()
                poll()
            except PreviewError as exc:
                fail(str(exc))
            except Exception:  # an exception escaping a Qt slot would abort the process
                import traceback
                fail("while waiting for the frame:\n" + traceback.format_exc().rstrip())

        def poll() -> None:
            if errors.messages:
                return fail(errors.summary())
            window = getattr(cli.main, "main_window", None)
            if window is not None and window.script_error_dialog.isVisible():
                return fail(f"vspreview shows '{window.script_error_dialog.windowTitle()}': "
                            f"{window.script_error_dialog.label.text()}")
            if window is not None and window.script_exec_failed:
                return fail("vspreview could not run the script")
            if time.monotonic() - t0 > args.timeout:
                return fail(f"the window did not show frame {args.frame} within {args.timeout:g} s")
            if window is None or not window.isVisible() or window.windowHandle() is None:
                return
            if state["geometry"] is None:
                window.setGeometry(0, 0, *args.window)
                state["geometry"] = QRect(0, 0, *args.window)
                state["shown_at"] = time.monotonic() - t0
            if not window.windowHandle().isExposed():
                return
            output = window.current_output
            if output is None:
                return
            if not state["seeked"]:
                # seek as the timeline and the frame box do; vspreview renders the frame here
                window.switch_frame(args.frame)
                state["seeked"] = True
                return
            if int(output.last_showed_frame) != args.frame:
                return fail(f"vspreview shows frame {int(output.last_showed_frame)} after seeking to {args.frame}"
                            f" (the output has {int(output.total_frames)} frames)")
            # a few event-loop turns of a still window: the resize and the paint are done
            if window.geometry() != state["geometry"]:
                state["geometry"] = window.geometry()
                state["stable_since"] = None
                return
            now = time.monotonic()
            if state["stable_since"] is None:
                state["stable_since"] = now
                return
            if now - state["stable_since"] < 0.5:
                return
            state["report"] = grab(window, output)
            app.exit(0)

        def grab(window, output) -> dict:
            view = window.graphics_view
            items = [i for i in view.scene().items() if isinstance(i, QGraphicsPixmapItem) and i.isVisible()]
            if len(items) != 1:
                raise PreviewError(f"expected one visible picture in the video area; found {len(items)}")
            t = view.transform()
            if (t.m11(), t.m22(), window.devicePixelRatio()) != (1.0, 1.0, 1.0):
                raise PreviewError(f"the video area is not at 100 % (zoom {t.m11()}x{t.m22()}, "
                                   f"device pixel ratio {window.devicePixelRatio()})")
            rect = items[0].sceneBoundingRect()
            top_left, bottom_right = view.mapFromScene(rect.topLeft()), view.mapFromScene(rect.bottomRight())
            in_view = QRect(top_left, QSize(bottom_right.x() - top_left.x(), bottom_right.y() - top_left.y()))
            if (in_view.width(), in_view.height()) != (output.width, output.height):
                raise PreviewError(f"the picture is {in_view.width()}x{in_view.height()}, the output "
                                   f"{output.width}x{output.height}")
            viewport = view.viewport()
            if not viewport.rect().contains(in_view):
                raise PreviewError(f"the frame ({output.width}x{output.height}) is not wholly visible in the "
                                   f"video area ({viewport.width()}x{viewport.height()}): enlarge --window")
            area = QRect(viewport.mapTo(window, in_view.topLeft()), in_view.size())
            # from the X server: what the screen shows in the window's rectangle (no window
            # manager on Xvfb: the window has no frame)
            g = window.geometry()
            shot = app.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height()).toImage()
            if (shot.width(), shot.height()) != (g.width(), g.height()):
                raise PreviewError(f"the screenshot is {shot.width()}x{shot.height()}, the window "
                                   f"{g.width()}x{g.height()}: is the window inside the screen?")
            return {
                "script": str(script),
                "args": list(args.args),
                "frame": int(output.last_showed_frame),
                "num_frames": int(output.total_frames),
                "output_size": [output.width, output.height],
                "window": [g.width(), g.height()],
                "video_area": [area.x(), area.y(), area.width(), area.height()],
                "window_image": shot,
                "frame_image": shot.copy(area),
            }

        timer = QTimer()
        timer.setInterval(100)
        timer.timeout.connect(tick)
        timer.start()
        vspreview_args = [str(script), *args.args, "-c"]
        print(f"preview_shot: vspreview {' '.join(vspreview_args)}", file=sys.stderr)
        try:
            code = cli.main(vspreview_args, no_exit=True)
        finally:
            timer.stop()
            logging.getLogger().removeHandler(errors)
    if state["failure"] is None and errors.messages:
        state["failure"] = errors.summary()
    if state["failure"] is not None:
        raise PreviewError(state["failure"])
    if code != 0 or state["report"] is None:
        raise PreviewError(f"vspreview closed (exit code {code}) before showing frame {args.frame}")
    report = state["report"]
    report["seconds"] = {"window_shown": round(state["shown_at"], 2), "grabbed": round(time.monotonic() - t0, 2)}
    report["versions"] = {name: metadata.version(name)
                          for name in ("vspreview", "vsjetpack", "PyQt6", "PyQt6-Qt6", "VapourSynth", "vs_vgan")}
    return report


def save_png(image, path: Path, colors: int) -> None:
    """A QImage as an optimised PNG: ``colors`` palette colours (median cut, Floyd-Steinberg
    dither: a video frame in 256 flat colours bands) or, with 0, RGB."""
    from PIL import Image

    rgb = image.convertToFormat(image.Format.Format_RGB888)
    pil = Image.frombuffer("RGB", (rgb.width(), rgb.height()), rgb.constBits().asstring(rgb.sizeInBytes()),
                           "raw", "RGB", rgb.bytesPerLine(), 1)
    if colors:
        palette = pil.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        pil = pil.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    pil.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    xvfb = None
    try:
        if not args.display:
            xvfb, display, log = start_xvfb(args.screen)
            os.environ["DISPLAY"] = display
            print(f"preview_shot: Xvfb on {display}, {args.screen[0]}x{args.screen[1]}", file=sys.stderr)
        elif not os.environ.get("DISPLAY"):
            raise PreviewError("--display: $DISPLAY is not set")
        report = shoot(args)
    except PreviewError as exc:
        print(f"preview_shot: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if xvfb is not None:
            stop_xvfb(xvfb, log)
    window, frame = report.pop("window_image"), report.pop("frame_image")
    for path in (args.out, args.frame_out, args.report):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if args.out:
        save_png(window, args.out, args.colors)
        report["out"] = {"path": str(args.out), "bytes": args.out.stat().st_size}
    if args.frame_out:
        if not frame.convertToFormat(frame.Format.Format_RGB888).save(str(args.frame_out), "PNG"):
            print(f"preview_shot: error: could not write {args.frame_out}", file=sys.stderr)
            return 1
        report["frame_out"] = {"path": str(args.frame_out), "bytes": args.frame_out.stat().st_size}
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"preview_shot: frame {report['frame']} of {report['num_frames']} shown, video area "
          f"{report['video_area']} in a {report['window'][0]}x{report['window'][1]} window; "
          + ", ".join(f"{v['path']} ({v['bytes'] / 1024:.0f} KiB)" for k, v in report.items()
                      if k in ("out", "frame_out")), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
