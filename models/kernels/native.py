"""The C kernels next to this file, compiled on first use with the machine's C compiler and
loaded through ctypes.

The shared library is cached under `$XDG_CACHE_HOME/recloop/kernels` (default
`~/.cache/recloop/kernels`), named by a hash of the source, the flags and the compiler's
version, so an edited kernel or another compiler builds afresh and concurrent processes (DDP
ranks) never load a half-written file: each compiles into a file of its own and renames it
into place. Without a compiler, or when the build fails, `load` returns None once with a
warning, and the callers use their torch implementation (slower; the same bits for the dropout
and the row sums, equal to float rounding for the others).
`python -m models.kernels` builds ahead of time (`make install` and the Dockerfile do).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent
CFLAGS = ("-O3", "-fPIC", "-shared", "-fno-strict-aliasing")
# The kernels' `omp parallel` loops: the library then needs libgomp.so.1, and in a process that
# has imported torch that name resolves to the copy torch loaded (one runtime, one thread pool;
# torch.set_num_threads sets the count for both). A compiler without OpenMP builds them serial.
OPENMP = "-fopenmp"
BUILD_TIMEOUT_S = 120
_enabled = True


class KernelBuildError(RuntimeError):
    """The C compiler is missing or rejected a kernel."""


@contextlib.contextmanager
def use_native(enabled: bool) -> Iterator[None]:
    """Within the block, the native paths (the C kernels, oneDNN products) are on or off for
    this process; off runs plain torch ops instead. On by default."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def enabled() -> bool:
    return _enabled


def plain_float32(*tensors) -> bool:
    """The kernels' inputs: float32 tensors on the CPU, outside autocast (which asks for other
    dtypes inside the op); anything else runs the torch implementations."""
    return (all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
            and not torch.is_autocast_enabled("cpu"))


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "recloop" / "kernels"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else ""


def build(name: str) -> Path:
    """The compiled `<name>.c`, built now unless a build of this very source is cached.
    Raises KernelBuildError with the compiler's message."""
    source = SOURCE_DIR / f"{name}.c"
    cc = compiler()
    if cc is None:
        raise KernelBuildError(f"no C compiler ({os.environ.get('CC', 'cc')!r} is not on PATH) to build {source}")
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(SOURCE_DIR.glob("*.h")):  # what the sources include
        digest.update(header.read_bytes())
    digest.update(" ".join((*CFLAGS, OPENMP, _compiler_version(cc))).encode())
    target = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        for flags in ((*CFLAGS, OPENMP), CFLAGS):
            out = subprocess.run([cc, *flags, "-o", partial, str(source)], capture_output=True, text=True,
                                 timeout=BUILD_TIMEOUT_S)
            if out.returncode == 0:
                break
        if out.returncode != 0:
            raise KernelBuildError(f"{cc} failed on {source} (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
        os.replace(partial, target)
    except subprocess.TimeoutExpired as exc:
        raise KernelBuildError(f"{cc} took over {BUILD_TIMEOUT_S} s on {source}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The kernel library `name`, or None (warned once) when it cannot be built or loaded.
    torch is imported by then (this module imports it), so the kernels' libgomp.so.1 is torch's."""
    try:
        return ctypes.CDLL(str(build(name)))
    except (KernelBuildError, OSError, subprocess.SubprocessError) as exc:
        log.warning("native kernel %r unavailable, using its torch implementation (slower): %s", name, exc)
        return None


def library(name: str, signatures: Mapping[str, Sequence[type]]) -> ctypes.CDLL | None:
    """The kernel library `name` with the argument types of its functions set (`signatures`:
    function -> ctypes argument types; every kernel returns void), or None when the native
    paths are off or it cannot be built."""
    lib = load(name) if _enabled else None
    if lib is not None and not getattr(lib, "_recloop_typed", False):
        for function, argtypes in signatures.items():
            getattr(lib, function).argtypes, getattr(lib, function).restype = list(argtypes), None
        lib._recloop_typed = True
    return lib
