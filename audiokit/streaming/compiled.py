"""Streaming steps compiled ahead of time with AOTInductor: one call per step, no Python per operation.

A model's streaming step is a few hundred small torch operations; at one stream, their dispatch costs
more than their arithmetic (docs/streaming.md). :class:`AheadOfTimeStep` exports a step
(``torch.export``, the state's tensors as explicit inputs and outputs, the batch dimension dynamic) and
compiles it into a shared library with AOTInductor (C++ with the elementwise operations fused and the
products left to the BLAS). The library is cached on disk, keyed by everything it depends on (the
block's weights, the source of ``audiokit``, torch's version, the chunk shape and the options), in
``$AUDIOKIT_KERNELS_CACHE/torch-<version>/aoti`` (default ``~/.cache/audiokit/kernels``): the first
session of a model compiles for 30-90 s on a 2-core machine, later ones load in about a second.

It runs steps of exactly the chunk shape it was compiled for (any number of streams); other chunks
and ``final`` steps go to the eager step on the same state, so a session may mix both. The compiled
arithmetic rounds differently from the eager one (within ~1e-5 of the audio): streaming still equals
offline within 1e-5, but codes may differ from offline codes at a rare near-tie, which is why it is
opt-in (``compile="aoti"`` on sessions). Where it cannot be built (no C++ compiler, an export
failure), :func:`compile_step` returns ``None`` and :func:`unavailable_reason` says why.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from audiokit.nn.precision import precision_key, weight_precision
from audiokit.nn.state import (
    StreamState,
    state_batch_dims,
    state_slots,
    state_tensors,
    with_state_tensors,
)
from audiokit.ops import cpp

PACKAGE_SOURCE = Path(__file__).resolve().parents[1]
KEEP_LIBRARIES = 96
"""Compiled steps kept in the cache (3-6 MB each); the least recently used go first (a new version of the
package or of the weights makes new ones). The test suite alone builds about 90; with 24 kept, 8 of them
were pruned and built again within one run."""
MAX_STREAMS = 4096
"""The most streams a compiled step takes at once (more run eagerly): within the RVQ search's block of
rows, so that the trace need not branch on the number of streams."""
TRACE_STREAMS = 64
"""The number of streams a step is traced with: the library takes any number (it stays symbolic; 1
would be specialised), but Inductor picks and times its kernels for this one. Traced at 64 rather than
2, the libraries ran 64 streams 1.3-1.75x faster and one stream as fast or faster (docs/streaming.md,
session 25)."""
INDUCTOR_OPTIONS = {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
"""How the libraries are compiled: each product is timed at build time as MKL's call and as Inductor's
C++ GEMM template (weights packed into its blocked layout, bias and epilogue fused) and the faster is
kept; one stream's codec round trip took 1.5-1.9x less time than with MKL's products alone
(docs/streaming.md, session 19). Where Inductor cannot build a step so, it is built with MKL's
products only, as everywhere when ``AUDIOKIT_AOTI_AUTOTUNE=0`` (what the test suite sets: the timing of
every product at build time is most of a build's minute)."""
_failures: dict[str, str] = {}


def cache_dir() -> Path:
    """Where compiled steps are kept: ``$AUDIOKIT_KERNELS_CACHE`` or ``~/.cache/audiokit/kernels``,
    per torch version, subfolder ``aoti``."""
    root = os.environ.get("AUDIOKIT_KERNELS_CACHE") or Path.home() / ".cache" / "audiokit" / "kernels"
    return Path(root) / f"torch-{torch.__version__}" / "aoti"


class _FunctionalStep(nn.Module):
    """``step(x, state, **options)`` as a function of tensors: ``(x, *state) -> (y, *new_state)``."""

    def __init__(self, step: Callable, template: StreamState | None, options: dict) -> None:
        super().__init__()
        self.step = step
        self.template = template
        self.options = options

    def forward(self, x: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = with_state_tensors(self.template, iter(tensors))
        y = self.step(x, state, **self.options)
        # contiguous states out (a copy inside the library), so that the next call's inputs need none
        return (*(y if isinstance(y, tuple) else (y,)), *(t.contiguous() for t in state_tensors(state)))


class AheadOfTimeStep:
    """``step(x, state, final=False, **options)`` compiled with AOTInductor for chunks ``x`` of any
    number of streams shaped ``chunk_shape`` otherwise; other chunks and final steps run ``step``
    itself, on the same state.

    Built by :func:`compile_step`; called exactly like the eager step (the state is updated in place),
    returning a tensor, or a tuple of tensors where the step does.
    """

    def __init__(
        self,
        step: Callable,
        runner: Callable,
        chunk_shape: tuple[int, ...],
        options: dict,
        tuple_of: int,
        library: Path,
    ) -> None:
        self.step = step
        self.runner = runner
        self.library = library  # the compiled package (.pt2)
        self.chunk_shape = chunk_shape
        self.options = options
        self.tuple_of = tuple_of  # 0: the step returns one tensor
        self._slots: tuple[StreamState | None, list[tuple[StreamState, str]]] = (None, [])

    def __call__(
        self, x: torch.Tensor, state: StreamState | None, final: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if final or tuple(x.shape[1:]) != self.chunk_shape or x.shape[0] > MAX_STREAMS:
            with torch.inference_mode():
                return self.step(x, state, final, **self.options)
        if self._slots[0] is not state:  # a session steps one tree: locate its tensors once
            self._slots = (state, state_slots(state))
        slots = self._slots[1]
        # the library assumes the layouts it was traced with (contiguous); eager steps leave views
        outputs = self.runner(x.contiguous(), *(getattr(node, name).contiguous() for node, name in slots))
        count = max(1, self.tuple_of)
        for (node, name), tensor in zip(slots, outputs[count:], strict=True):
            setattr(node, name, tensor)
        return tuple(outputs[:count]) if self.tuple_of else outputs[0]


def compile_step(
    module: nn.Module,
    step: Callable,
    state: StreamState | None,
    chunk: torch.Tensor,
    options: dict | None = None,
    tuple_of: int = 0,
) -> AheadOfTimeStep | None:
    """``module``'s ``step`` compiled ahead of time for chunks shaped like ``chunk`` (one stream's
    ``(1, ...)``; the number of streams is dynamic), with ``state`` (a zero state of one stream) as the
    template of the state it updates and ``options`` (numbers, bools) fixed; ``tuple_of``: how many
    tensors the step returns as a tuple (0: one tensor, not in a tuple). ``module``'s config, weights
    and buffers key the cache: it must hold everything the step computes with (pass the model, not a
    block of it). ``None`` where it cannot be built here."""
    options = dict(options or {})
    key = _cache_key(module, step, state, chunk, options)
    if key in _failures:
        return None
    path = cache_dir() / f"{type(module).__name__.lower()}-{key}.pt2"
    try:
        precision = weight_precision(module)
        if precision != "float32" and chunk.device.type == "cpu" and cpp.load() is None:
            raise RuntimeError(f"{precision} weights need the C++ kernels: {cpp.unavailable_reason()}")
        if path.is_file():
            _mark_used(path)
        else:
            missing = _missing_tool()
            if missing is not None:
                raise RuntimeError(missing)
            with _caches_kept(module):  # tracing must not leave traced tensors in the blocks' caches
                _build(step, state, chunk, options, path)
            _prune(path.parent, KEEP_LIBRARIES)
        runner = _flat_runner(torch._inductor.aoti_load_package(str(path)))
    except Exception as exc:  # noqa: BLE001 - any failure means: run the eager step
        lines = str(exc).strip().splitlines()
        _failures[key] = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        return None
    return AheadOfTimeStep(step, runner, tuple(chunk.shape[1:]), options, tuple_of, path)


class HopwiseSteps:
    """``step(x, state, final=False)`` of chunks of any whole number of hops on two libraries, compiled
    for one hop and for two: ``k`` hops run as ``k // 2`` two-hop calls and, for odd ``k``, a one-hop
    call (a model's steps are sequential: the same result as one step of ``k`` hops). Final steps and
    other chunks run eagerly (through :class:`AheadOfTimeStep`'s fallback). Built by
    :func:`compile_hopwise`. Needs no inference-mode context around it (a few microseconds a push):
    the libraries record no autograd, and the eager steps enter inference mode themselves."""

    def __init__(self, one: AheadOfTimeStep | None, two: AheadOfTimeStep | None, eager: Callable, hop: int):
        eager = torch.inference_mode()(eager)
        self.one, self.two, self.eager, self.hop = one or eager, two or eager, eager, hop

    def __call__(self, x: torch.Tensor, state: StreamState | None, final: bool = False) -> torch.Tensor:
        length, pair = x.shape[-1], 2 * self.hop
        if final or length % self.hop:
            return self.eager(x, state, final)
        if length == pair:  # the usual push: one call
            return self.two(x, state)
        pieces = [
            self.two(x[..., start : start + pair], state) for start in range(0, length - pair + 1, pair)
        ]
        if length % pair:
            pieces.append(self.one(x[..., length - self.hop :], state))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)


def compile_hopwise(
    module: nn.Module,
    step: Callable,
    state: StreamState | None,
    hop: torch.Tensor,
    options: dict | None = None,
) -> HopwiseSteps | None:
    """:class:`HopwiseSteps` of ``module``'s ``step`` (see :func:`compile_step`) for chunks shaped like
    ``hop`` (one stream's ``(1, ..., hop samples)``) and twice as long; ``None`` where neither library
    can be built here."""
    options = dict(options or {})
    two = compile_step(module, step, state, torch.cat([hop, hop], -1), options)
    one = compile_step(module, step, state, hop, options)
    if one is None and two is None:
        return None
    return HopwiseSteps(one, two, functools.partial(step, **options), hop.shape[-1])


def _flat_runner(package: Callable) -> Callable:
    """``package``'s library called on tensors directly: the package's own ``__call__`` flattens and
    rebuilds its inputs and outputs through pytrees on every call (~0.1 ms a step for a codec)."""
    loader = getattr(package, "loader", None)
    if loader is None or not hasattr(loader, "boxed_run"):
        return package

    def run(*tensors: torch.Tensor) -> list[torch.Tensor]:
        return loader.boxed_run(list(tensors))

    return run


def unavailable_reason() -> str | None:
    """Why the latest :func:`compile_step` that failed did (``None`` if none has)."""
    return next(reversed(_failures.values()), None)


def _mark_used(path: Path) -> None:
    """Set ``path``'s modification time to now, so that :func:`_prune` keeps the libraries last used (a
    read-only cache stays as it is)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` libraries in ``folder`` most recently built or used (files that
    another process sharing the cache removes or renames meanwhile are skipped)."""
    libraries = []
    for path in folder.glob("*.pt2"):
        with contextlib.suppress(FileNotFoundError):
            libraries.append((path.stat().st_mtime_ns, path))
    for _, old in sorted(libraries, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def _missing_tool() -> str | None:
    compiler = os.environ.get("CXX", "c++")
    return None if shutil.which(compiler) else f"no C++ compiler ({compiler}) on PATH"


@contextlib.contextmanager
def _caches_kept(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's attributes afterwards (steps cache prepared weights and masks in
    their ``__dict__``; a trace would replace them with fake tensors)."""
    saved = [(m, dict(m.__dict__)) for m in module.modules()]
    try:
        yield
    finally:
        for m, attributes in saved:
            m.__dict__.clear()
            m.__dict__.update(attributes)


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Silence the compilers' own warnings (fallback notes) while building."""
    loggers = [logging.getLogger(name) for name in ("torch._inductor", "torch._export", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _build(step: Callable, state: StreamState | None, chunk: torch.Tensor, options: dict, path: Path) -> None:
    """Export and compile the step to ``path``, atomically, traced at :data:`TRACE_STREAMS` streams
    (the number of streams stays symbolic)."""
    function = _FunctionalStep(step, state, options)
    dims = state_batch_dims(state)
    tensors = [
        t.repeat(*[TRACE_STREAMS if d == dim else 1 for d in range(t.dim())])
        for t, dim in zip(state_tensors(state), dims, strict=True)
    ]
    batch = torch.export.Dim("streams", min=1, max=MAX_STREAMS)
    shapes = ({0: batch}, tuple({d: batch} for d in dims))
    example = (chunk.repeat(TRACE_STREAMS, *([1] * (chunk.dim() - 1))), *tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_torch_logs():
        warnings.simplefilter("ignore")
        program = torch.export.export(function, example, dynamic_shapes=shapes, strict=False)
        handle, temporary = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
        os.close(handle)
        try:
            try:
                if not autotuned():
                    raise RuntimeError("AUDIOKIT_AOTI_AUTOTUNE=0")
                torch._inductor.aoti_compile_and_package(
                    program, package_path=temporary, inductor_configs=dict(INDUCTOR_OPTIONS)
                )
            except Exception:  # noqa: BLE001 - the template fails on some graphs: MKL's products then
                torch._inductor.aoti_compile_and_package(program, package_path=temporary)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)


def autotuned() -> bool:
    """Whether libraries are built with :data:`INDUCTOR_OPTIONS` (not when ``AUDIOKIT_AOTI_AUTOTUNE=0``)."""
    return os.environ.get("AUDIOKIT_AOTI_AUTOTUNE", "1") != "0"


def _cache_key(
    module: nn.Module, step: Callable, state: StreamState | None, chunk: torch.Tensor, options: dict
) -> str:
    """Hash of what a compiled step depends on: which step of which part of the model (a codec's shared
    decoder and its decoders per rate have the same shapes), the model's config, weights and buffers,
    audiokit's source, torch, the vector instructions the library is built for (one built with AVX-512
    would crash on an AVX2-only CPU sharing the cache), the shapes and the options."""
    owner = getattr(step, "__self__", None)
    part = next((name for name, sub in module.named_modules() if sub is owner), None)
    digest = hashlib.sha256()
    digest.update(f"{getattr(step, '__qualname__', type(step).__qualname__)}|{part}".encode())
    digest.update(f"{torch.__version__}|{type(module).__qualname__}|{tuple(chunk.shape[1:])}".encode())
    digest.update(f"{chunk.device.type}|{torch.backends.cpu.get_cpu_capability()}".encode())
    digest.update(repr(getattr(module, "config", None)).encode())
    digest.update(f"{precision_key(module)}|autotuned={autotuned()}|traced={TRACE_STREAMS}".encode())
    digest.update(repr(sorted(options.items())).encode())
    digest.update(repr([(tuple(t.shape), str(t.dtype)) for t in state_tensors(state)]).encode())
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for source in sorted(PACKAGE_SOURCE.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:20]
