"""``compile=True``: a network's inference methods through ``torch.compile``, with a fallback.

:class:`CompiledNetwork` stands in for a loaded network (it forwards every attribute) and
runs its per-frame, per-pair and per-output methods (``prepare``, ``pair``, ``fields``,
``render``, ``synthesize``, ``encode``, ``predict_state``, ``predict``, and ``forward``
for networks run once per pair and ``t``, called as the network itself) as compiled
functions (TorchInductor, fixed shapes: one compilation per frame or plane size, made on
the first frames).  The network itself is not changed: it is shared by every node that
loaded it.

CUDA graphs are not used: their captured memory belongs to one thread and one stream,
and frames arrive on several VapourSynth threads at once, each with its own stream.

Fallback: when a compiled call raises (no C++ compiler or Triton, an operator the
compiler can't take, a compiler bug), the same call is made eagerly.  If that succeeds,
the error was the compiler's: it is logged once as a warning and the network runs
eagerly from then on.  If it fails too, its error is the one raised.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import torch

__all__ = ["CompiledNetwork", "COMPILED_METHODS"]

log = logging.getLogger("vs_vgan")

COMPILED_METHODS = ("prepare", "pair", "fields", "render", "synthesize", "encode", "predict_state", "predict",
                    "forward")
#: Calls of each method made one at a time (under a lock) before calls may overlap: the
#: first calls compile (once per input size), and compiling is not made concurrently.
_WARMUP_CALLS = 8


class CompiledNetwork:
    """``net`` with :data:`COMPILED_METHODS` run through ``torch.compile``; everything
    else is ``net``'s own."""

    def __init__(self, net: torch.nn.Module, *, func: str, compiler: Callable[..., Any] | None = None) -> None:
        compiler = torch.compile if compiler is None else compiler
        self.network = net
        self.func = func
        self.failed: str | None = None  # the compiler's error, once it has failed
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}
        self._compiled = {name: compiler(getattr(net, name), dynamic=False) for name in COMPILED_METHODS
                          if callable(getattr(net, name, None))}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The network's ``forward`` (compiled), as calling the module would run it."""
        return self._call("forward", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        # only reached for what the instance itself lacks: the network's attributes
        if name.startswith("__") or name in ("network", "_compiled"):
            raise AttributeError(name)
        if name in self._compiled:
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        return getattr(self.network, name)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.failed is not None:
            return getattr(self.network, name)(*args, **kwargs)
        if self._calls.get(name, 0) < _WARMUP_CALLS:
            with self._lock:
                out = self._attempt(name, args, kwargs)
                self._calls[name] = self._calls.get(name, 0) + 1
                return out
        return self._attempt(name, args, kwargs)

    def _attempt(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self._compiled[name](*args, **kwargs)
        except Exception as error:  # noqa: BLE001  (judged by the eager call below)
            eager = getattr(self.network, name)(*args, **kwargs)  # a genuine error raises here
            if self.failed is None:
                self.failed = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                log.warning("vs_vgan.%s: compile=True failed in %s (%s); running without torch.compile",
                            self.func, name, self.failed)
            return eager
