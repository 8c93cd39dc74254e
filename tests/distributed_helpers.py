"""What the Ray workers of tests/test_distributed.py import (its cluster puts tests/ on their
PYTHONPATH): the hook that takes a folder's storage away from them, and picklable clip
factories, some of which fail in the workers on purpose."""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

#: The folder the workers of the test cluster can't see (worker_process_setup_hook below).
HIDE_ENV = "VS_VGAN_TEST_HIDE"


def hide_storage() -> None:
    """The cluster's worker_process_setup_hook: in this worker, the folder named by
    $VS_VGAN_TEST_HIDE is an empty tmpfs of its own (a mount namespace), as on a machine
    without that storage.  Where this process may not do that, nothing changes (the test
    that needs it skips)."""
    folder = os.environ.get(HIDE_ENV)
    if not folder:
        return
    try:
        os.unshare(os.CLONE_NEWNS)
        subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder], check=True, capture_output=True)
    except (OSError, AttributeError, subprocess.CalledProcessError):
        pass


@dataclass(frozen=True)
class Upconvert:
    """INPUT through bestsource and vs_vgan.interpolate (a picklable clip factory)."""

    path: str
    model: Any
    factor: int = 2

    def __call__(self) -> Any:
        import vapoursynth as vs

        import vs_vgan

        return vs_vgan.interpolate(vs.core.bs.VideoSource(self.path), factor=self.factor, model=self.model,
                                   device="cpu")


@dataclass(frozen=True)
class KillOnce:
    """``inner``, except that the first worker to call it is killed (SIGKILL) before it
    returns; the marker file says it happened.  The driver (process ``driver``) is spared."""

    inner: Callable[[], Any]
    marker: str
    driver: int

    def __call__(self) -> Any:
        if os.getpid() != self.driver:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner()


@dataclass(frozen=True)
class Broken:
    """``inner`` in the driver; a bug (RuntimeError) in every worker."""

    inner: Callable[[], Any]
    driver: int

    def __call__(self) -> Any:
        if os.getpid() != self.driver:
            raise RuntimeError("a bug in the graph")
        return self.inner()
