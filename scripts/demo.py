"""The README's main job: render the bundled sample at twice its frame rate.

vspipe runs examples/demo.vpy and streams y4m into ffmpeg (H.264 in Matroska), or into a
.y4m file when ffmpeg is absent.  Progress and the result go to stderr.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factor", default="2", help='frame-rate factor, e.g. 2 or "5/2" (default 2)')
    ap.add_argument("--model", default=None, help="interpolation model (default: the package default)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="output file (default out/demo_2x.mkv, or out/demo_2x.y4m without ffmpeg)")
    ap.add_argument("--no-ffmpeg", action="store_true", help="write raw y4m even when ffmpeg is present")
    args = ap.parse_args(argv)

    vspipe = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or shutil.which("vspipe")
    if vspipe is None:
        print("demo: vspipe not found; run scripts/demo.sh, which installs it into .venv", file=sys.stderr)
        return 2
    ffmpeg = None if args.no_ffmpeg else shutil.which("ffmpeg")
    output = args.output or ROOT / "out" / ("demo_2x.mkv" if ffmpeg else "demo_2x.y4m")
    output.parent.mkdir(parents=True, exist_ok=True)
    script = ROOT / "examples" / "demo.vpy"
    vsargs = ["-a", f"factor={args.factor}", "-a", f"device={args.device}"]
    if args.model:
        vsargs += ["-a", f"model={args.model}"]

    start = time.perf_counter()
    if ffmpeg:
        pipe = subprocess.Popen([vspipe, "-c", "y4m", "-p", *vsargs, str(script), "-"], stdout=subprocess.PIPE)
        enc = subprocess.run([ffmpeg, "-hide_banner", "-v", "error", "-y", "-i", "-", "-c:v", "libx264",
                              "-crf", "16", "-preset", "medium", "-pix_fmt", "yuv420p", str(output)],
                             stdin=pipe.stdout)
        pipe.stdout.close()
        rc = pipe.wait() or enc.returncode
    else:
        print("demo: ffmpeg not found, writing raw y4m (apt-get install ffmpeg for H.264 output)", file=sys.stderr)
        rc = subprocess.run([vspipe, "-c", "y4m", "-p", *vsargs, str(script), str(output)]).returncode
    elapsed = time.perf_counter() - start
    if rc != 0:
        output.unlink(missing_ok=True)
        print(f"demo: failed (exit {rc}); no output written", file=sys.stderr)
        return 1
    print(f"demo: wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
