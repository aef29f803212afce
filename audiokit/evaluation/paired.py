"""A paired evaluation run: test audio (given, made by a baseline, or coded by one of our codecs through
real ``.akc`` files) scored against references, per file and summarised (what ``audiokit eval`` does)."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from audiokit import io
from audiokit.bandwidth_extension import extend_audio, load_extender
from audiokit.coding import code_file, codec_bitrate, load_codec
from audiokit.enhancement import enhance_audio, load_enhancer
from audiokit.errors import ModelError, UsageError
from audiokit.evaluation import baselines
from audiokit.evaluation.metrics import HIGH_BAND_LSD, METRICS
from audiokit.evaluation.pairing import FilePair, check_compatible, pair_files
from audiokit.evaluation.plots import plot_format, spectrogram_comparison
from audiokit.evaluation.scoring import score_pair
from audiokit.evaluation.stats import paired_difference, summarize
from audiokit.io import RawFormat
from audiokit.models.base import model_label
from audiokit.progress import progress

PLOT_ROWS = 4


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate: references ``ref`` (a file or directory) against exactly one test source.

    * ``test``: test audio at the same relative paths (another audio extension pairs too);
    * ``baseline``: one of :data:`~audiokit.evaluation.baselines.BASELINES` applied to the references
      (``opus`` needs ``bitrate_kbps``, ``sinc`` needs ``input_rate`` in Hz);
    * ``codec``: one of our codecs (shipped name, run directory or ``.safetensors``) at ``bitrate_kbps``,
      through ``.akc`` files, decoded back at the reference's rate;
    * ``enhancer`` (an enhancement model, any of family ``enhancer``) or an enhancement ``baseline``
      (:data:`~audiokit.evaluation.baselines.ENHANCERS`: ``rnnoise``, ``gating``): run on ``test``, the
      noisy input, and scored against ``ref``, the clean speech;
    * ``extender`` (a bandwidth extender, family ``bwe``): run on ``ref`` resampled to ``input_rate``,
      its output resampled back to the reference's rate; the sinc baseline is scored on the same files
      (``sinc_*`` columns, the report's ``sinc`` and ``vs_sinc``).

    With ``input_rate``, rows also hold ``lsd_high``, the LSD above ``input_rate / 2``.

    ``glob`` filters reference paths; ``keep``: also save the test audio (and coded files) there;
    ``csv``/``plot``: write per-file scores / a spectrogram PNG of the first files; ``jobs``: worker
    processes; ``raw``: read every input as headerless PCM.
    """

    ref: Path
    test: Path | None = None
    baseline: str | None = None
    codec: str | None = None
    enhancer: str | None = None
    extender: str | None = None
    bitrate_kbps: float | None = None
    input_rate: int | None = None
    glob: str = "*"
    keep: Path | None = None
    csv: Path | None = None
    plot: Path | None = None
    jobs: int = 1
    quiet: bool = True
    raw: RawFormat | None = None

    @property
    def enhances(self) -> bool:
        """True when the test audio is made by enhancing ``test`` (an enhancer or enhancement baseline)."""
        return bool(self.enhancer) or self.baseline in baselines.ENHANCERS

    @property
    def high_band_hz(self) -> float | None:
        """Where the band a band-limited input lacks starts (Hz), or None without ``input_rate``."""
        return None if self.input_rate is None else self.input_rate / 2

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics every row holds."""
        return (*METRICS, HIGH_BAND_LSD) if self.input_rate is not None else METRICS

    def validate(self) -> None:
        """UsageError (naming the option to fix) for a request that cannot run."""
        if not self.ref.exists():
            raise UsageError(f"{self.ref}: no such file or directory")
        if self.extender:
            if self.baseline or self.codec or self.test:
                raise UsageError(
                    f"-m/--model {self.extender} extends REF_DIR downsampled to --input-rate (and compares "
                    "the sinc baseline in the same run): give neither TEST_DIR nor --baseline"
                )
            if self.input_rate is None:
                raise UsageError(f"-m/--model {self.extender} needs --input-rate HZ (e.g. --input-rate 8000)")
            load_extender(self.extender)  # a clear error before any work
        if self.enhances:
            what = f"-m/--model {self.enhancer}" if self.enhancer else f"--baseline {self.baseline}"
            if self.enhancer and (self.baseline or self.codec):
                raise UsageError("give either -m/--model or --baseline, not both")
            if not self.test:
                raise UsageError(
                    f"{what} enhances noisy audio: give REF_DIR (clean speech) and TEST_DIR (the noisy "
                    "input at the same relative paths)"
                )
            if self.enhancer:
                load_enhancer(self.enhancer)  # a clear error before any work
        if self.codec and self.baseline:
            raise UsageError("give either -m/--model or --baseline, not both")
        system = "-m/--model" if self.codec else "--baseline"
        if self.test and (self.baseline or self.codec) and not self.enhances:
            raise UsageError(f"give either TEST_DIR or {system}, not both")
        if not self.test and not self.baseline and not self.codec and not self.extender:
            raise UsageError(
                "give a TEST_DIR to compare with REF_DIR, --baseline opus|sinc|identity, or --codec MODEL"
            )
        if self.baseline is not None and self.baseline not in baselines.BASELINES:
            raise UsageError(f"--baseline {self.baseline}: choose from {', '.join(baselines.BASELINES)}")
        if self.bitrate_kbps is not None and not (math.isfinite(self.bitrate_kbps) and self.bitrate_kbps > 0):
            raise UsageError(f"--bitrate must be positive, got {self.bitrate_kbps}")
        if self.bitrate_kbps is not None and not (self.codec or self.baseline == "opus"):
            raise UsageError(
                f"--bitrate {self.bitrate_kbps:g}: only --baseline opus and -m/--model CODEC code at a "
                "bitrate; leave it out"
            )
        if self.keep and not (self.codec or self.baseline or self.enhancer or self.extender):
            raise UsageError(
                "--keep saves the audio a baseline or -m/--model makes; the test audio of TEST_DIR is "
                "already on disk"
            )
        if self.input_rate is not None:
            io.check_sample_rate(self.input_rate, "--input-rate")
        if self.jobs < 1:
            raise UsageError(f"--jobs {self.jobs}: must be 1 or more")
        if self.plot is not None:
            plot_format(self.plot)
        if self.baseline == "opus" and self.bitrate_kbps is None:
            raise UsageError("--baseline opus needs --bitrate KBPS (e.g. --bitrate 6)")
        if self.baseline == "sinc" and self.input_rate is None:
            raise UsageError("--baseline sinc needs --input-rate HZ (e.g. --input-rate 8000)")
        if self.codec:
            codec, _ = load_codec(self.codec)
            if self.bitrate_kbps is None:
                listed = ", ".join(f"{b / 1000:g}" for b in codec.bitrates)
                label = model_label(self.codec, codec.name)
                raise UsageError(f"-m/--model needs --bitrate KBPS ({label}: {listed})")
            codec_bitrate(codec, self.bitrate_kbps, model=self.codec)


def _run_codec(
    pair: FilePair, ref: torch.Tensor, rate: int, request: EvalRequest
) -> baselines.BaselineOutput:
    codec, weights_hash = load_codec(request.codec)
    bitrate = codec_bitrate(codec, request.bitrate_kbps, model=request.codec)
    with tempfile.TemporaryDirectory(prefix="audiokit-eval-") as tmp:
        where = Path(request.keep or tmp) / pair.name
        akc, decoded = where.with_suffix(".akc"), where.with_suffix(".wav")
        size = code_file(codec, weights_hash, pair.reference, akc, decoded, bitrate, rate, request.raw)
        out, _ = io.load(decoded)
    seconds = ref.shape[-1] / rate
    return baselines.BaselineOutput(baselines.fit_length(out, ref.shape[-1]), size * 8 / seconds, size)


def _make_test(
    pair: FilePair, ref: torch.Tensor, rate: int, request: EvalRequest
) -> baselines.BaselineOutput:
    if request.codec:
        return _run_codec(pair, ref, rate, request)
    if request.baseline == "opus":
        coded = Path(request.keep) / Path(pair.name).with_suffix(".opus") if request.keep else None
        try:
            return baselines.opus(ref, rate, request.bitrate_kbps, coded)
        except UsageError as exc:  # its temporary files' names mean nothing to the user
            raise UsageError(f"{pair.reference}: {exc}") from None
    if request.baseline == "sinc":
        return baselines.sinc(ref, rate, request.input_rate)
    return baselines.identity(ref, rate)


def _enhance(noisy: torch.Tensor, rate: int, request: EvalRequest) -> torch.Tensor:
    """``noisy (channels, samples)`` at ``rate`` Hz through the request's enhancer or baseline."""
    if request.enhancer:
        return enhance_audio(load_enhancer(request.enhancer)[0], noisy, rate)
    return baselines.ENHANCERS[request.baseline](noisy, rate).wav


def _extend(ref: torch.Tensor, rate: int, request: EvalRequest) -> torch.Tensor:
    """``ref (channels, samples)`` at ``rate`` Hz resampled to the request's input rate, through its
    bandwidth extender, and resampled back to ``rate`` (soxr HQ), trimmed/padded to the same length."""
    model, _ = load_extender(request.extender)
    low = io.resample(ref.numpy().T, rate, request.input_rate)
    out = extend_audio(model, torch.from_numpy(np.ascontiguousarray(low.T)), request.input_rate)
    back = io.resample(out.numpy().T, model.sample_rate, rate)
    return baselines.fit_length(torch.from_numpy(np.ascontiguousarray(back.T)), ref.shape[-1])


def evaluate_pair(pair: FilePair, request: EvalRequest) -> tuple[dict, torch.Tensor, torch.Tensor, int]:
    """Load (or make, for a baseline or codec) the test audio of ``pair`` and score it against the reference.

    Returns the row (file, sample_rate, seconds, every metric, bitrate_kbps for coders, sinc_* for
    bandwidth extenders), the reference and test audio ``(channels, samples)`` and their rate. Coded
    audio is decoded back at the reference rate and trimmed/padded to its length
    (:func:`audiokit.evaluation.baselines.fit_length`).
    """
    ref, rate = io.load(pair.reference, raw=request.raw)
    if (request.baseline == "sinc" or request.extender) and request.input_rate >= rate:
        raise UsageError(
            f"{pair.reference}: {rate} Hz is not above --input-rate {request.input_rate} (nothing to take "
            "down; --glob can leave it out)"
        )
    bitrate = None
    extra: dict = {}
    if request.enhances:
        noisy, noisy_rate = io.load(pair.test, raw=request.raw)
        check_compatible(pair, ref, rate, noisy, noisy_rate)
        test, test_rate = _enhance(noisy, rate, request), rate
    elif request.extender:
        test, test_rate = _extend(ref, rate, request), rate
        sinc = score_pair(ref, baselines.sinc(ref, rate, request.input_rate).wav, rate, request.high_band_hz)
        extra = {f"sinc_{name}": sinc[name] for name in request.metrics}
    elif request.baseline or request.codec:
        made = _make_test(pair, ref, rate, request)
        test, test_rate, bitrate = made.wav, rate, made.bitrate_bps
    else:
        test, test_rate = io.load(pair.test, raw=request.raw)
    if request.keep and (request.enhancer or request.extender or request.baseline):  # a codec keeps its own
        io.save(Path(request.keep) / Path(pair.name).with_suffix(".wav"), test, rate, subtype="FLOAT")
    check_compatible(pair, ref, rate, test, test_rate)
    if not bool(test.isfinite().all()):  # scored, its file would drop out of the means (STOI read 1.0)
        system = request.enhancer or request.extender or request.baseline or request.codec
        raise ModelError(
            f"{pair.reference}: the output of {system} has NaN or infinite samples; nothing scored"
        )
    row = {"file": pair.name, "sample_rate": rate, "seconds": ref.shape[1] / rate}
    row.update(score_pair(ref, test, rate, request.high_band_hz))
    row.update(extra)
    if bitrate is not None:
        row["bitrate_kbps"] = bitrate / 1000
    return row, ref, test, rate


def _plotted(pairs: list[FilePair], request: EvalRequest) -> set[int]:
    """Indices of the pairs ``--plot`` draws: the first :data:`PLOT_ROWS` at the first reference's rate
    (one figure has one frequency axis), found from the files' headers."""
    chosen: set[int] = set()
    first = None
    for index, pair in enumerate(pairs if request.plot else []):
        rate = io.info(pair.reference, raw=request.raw).sample_rate
        first = first or rate
        if rate == first:
            chosen.add(index)
        if len(chosen) == PLOT_ROWS:
            break
    return chosen


def _evaluate_in_worker(indexed: tuple[int, FilePair], request: EvalRequest, plotted: set[int]):
    """Worker-process version of :func:`evaluate_pair`; audio only comes back for ``plotted`` files."""
    torch.set_num_threads(1)
    index, pair = indexed
    row, ref, test, rate = evaluate_pair(pair, request)
    return (row, ref, test, rate) if index in plotted else (row, None, None, rate)


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Per-file rows as CSV (columns in first-seen order), written atomically."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _means(rows: list[dict], names: tuple[str, ...]) -> dict:
    """``{name: mean, "ci95": {name: half-width}, "count": {name: n}}`` of ``rows`` (JSON-ready)."""
    summary = summarize(rows, names)
    result: dict = {name: _json_number(summary.mean[name]) for name in names}
    result["ci95"] = {name: _json_number(summary.ci95[name]) for name in names}
    result["count"] = summary.count
    return result


def report(request: EvalRequest, rows: list[dict]) -> dict:
    """The JSON-ready summary of ``rows``: n, every metric's mean, ``ci95`` and ``count``, seconds,
    rates, PESQ mode, and what made the test audio (baseline or codec, nominal and actual bitrate; for a
    bandwidth extender, the sinc baseline's means on the same files and the paired differences)."""
    result: dict = {"n": len(rows), **_means(rows, request.metrics)}
    result["seconds"] = round(sum(r["seconds"] for r in rows), 3)
    rates = sorted({r["sample_rate"] for r in rows})
    result["sample_rates"] = rates
    modes = {rate: "wb" if rate >= 16000 else "nb" for rate in rates}
    result["pesq_mode"] = ", ".join(sorted(set(modes.values())))
    mixed_pesq = "pesq" in request.metrics and len(set(modes.values())) > 1  # two scales: no mean across
    if mixed_pesq:
        result["pesq_by_mode"] = {
            mode: _means([r for r in rows if modes[r["sample_rate"]] == mode], ("pesq",))
            for mode in sorted(set(modes.values()))
        }
        result["pesq"] = result["ci95"]["pesq"] = None
    result["pesq_resampled"] = any(r not in (8000, 16000) for r in rates)
    if request.baseline:
        result["baseline"] = request.baseline
    if request.codec:
        codec, weights_hash = load_codec(request.codec)
        result.update(codec=request.codec, model=codec.name, weights_sha256=weights_hash)
        result["model_sample_rate"] = codec.sample_rate
    if request.enhancer:
        model, weights_hash = load_enhancer(request.enhancer)
        result.update(enhancer=request.enhancer, model=model.name, weights_sha256=weights_hash)
        result["model_sample_rate"] = model.sample_rate
    if request.extender:
        model, weights_hash = load_extender(request.extender)
        result.update(extender=request.extender, model=model.name, weights_sha256=weights_hash)
        result["model_sample_rate"] = model.sample_rate
        sinc = [{"file": r["file"], **{m: r[f"sinc_{m}"] for m in request.metrics}} for r in rows]
        result["sinc"] = _means(sinc, request.metrics)
        result["vs_sinc"] = {
            name: {k: _json_number(v) for k, v in paired_difference(rows, sinc, name).items()}
            for name in request.metrics
        }
        if mixed_pesq:  # as for ours: PESQ-NB and PESQ-WB apart
            result["sinc"]["pesq_by_mode"] = {
                mode: _means(
                    [s for s, r in zip(sinc, rows, strict=True) if modes[r["sample_rate"]] == mode], ("pesq",)
                )
                for mode in result["pesq_by_mode"]
            }
            result["sinc"]["pesq"] = result["sinc"]["ci95"]["pesq"] = None
            result["vs_sinc"]["pesq"] = {k: None for k in result["vs_sinc"]["pesq"]}
    if request.enhances:
        result["noisy_input"] = str(request.test)
    if request.baseline == "opus" or request.codec:
        result["bitrate_kbps"] = request.bitrate_kbps
        # over the unrounded duration: rounded, files under 0.5 ms in all divided by zero
        seconds = sum(r["seconds"] for r in rows)
        result["actual_bitrate_kbps"] = round(
            sum(r["bitrate_kbps"] * r["seconds"] for r in rows) / seconds, 3
        )
    if request.input_rate is not None:
        result["input_rate"] = request.input_rate
    result["skipped"] = {r["file"]: r["skipped"] for r in rows if "skipped" in r}
    return result


def evaluate(request: EvalRequest) -> tuple[list[dict], dict]:
    """Per-file rows and the summary :func:`report` of ``request``.

    Also writes ``request.csv`` and ``request.plot`` when given; prints nothing but progress.
    """
    request.validate()
    pairs = pair_files(Path(request.ref), Path(request.test) if request.test else None, request.glob)
    desc = "eval " + (
        f"{request.codec} {request.bitrate_kbps:g} kbps"
        if request.codec
        else request.enhancer or request.extender or request.baseline or ""
    )
    shown = _plotted(pairs, request)
    plotted: list[tuple[str, tuple[torch.Tensor, torch.Tensor]]] = []
    plot_rate = None
    if request.jobs > 1 and len(pairs) > 1:
        pool = ProcessPoolExecutor(min(request.jobs, os.cpu_count() or 1))
        results = pool.map(partial(_evaluate_in_worker, request=request, plotted=shown), enumerate(pairs))
    else:
        pool = None
        results = (evaluate_pair(pair, request) for pair in pairs)
    rows = []
    try:
        done = progress(
            results, desc.strip(), len(pairs), request.quiet, label=lambda result: result[0]["file"]
        )
        for index, (pair, (row, ref, test, rate)) in enumerate(zip(pairs, done, strict=True)):
            rows.append(row)
            if index in shown:
                plotted.append((pair.name, (ref, test)))
                plot_rate = rate
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    result = report(request, rows)
    if request.csv:
        write_csv(request.csv, rows)
    if request.plot:
        title = (
            f"{Path(request.codec).name} {request.bitrate_kbps:g} kbps"
            if request.codec
            else request.enhancer or request.extender or request.baseline or "test"
        )
        spectrogram_comparison(plotted, plot_rate, request.plot, ("reference", title))
    return rows, result
