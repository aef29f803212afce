#!/usr/bin/env bash
# The GPU tests and the kernels' GPU benchmark in one call of the lent GPU (device `run`, at most 10
# minutes); see README.md here ("The kernels on a lent GPU").
#
#   device run:    AUDIOKIT_COMMIT=<git rev-parse HEAD here> bash recipes/gpu/bench_kernels.sh
#           carry: runs/gpu-wheels (soundfile, soxr, pesq...)
#   CPU rehearsal: PYTHON=.venv/bin/python DEVICE=cpu COUNTS="1 16" FRAMES=10 OUT=/tmp/bench-out \
#                  bash recipes/gpu/bench_kernels.sh
#
# 1. installs carried wheels when a package audiokit imports, pytest or ninja is missing (exit 3 when
# soundfile or soxr stay missing); 2. stops (exit 4) when DEVICE=cuda and
# torch sees no GPU; 3. builds the CUDA kernels (timed; the build is cached for the tests); 4. runs the
# `gpu`-marked tests (log and JUnit XML into $OUT); 5. times N round-trip streams on the device per
# audiokit.ops backend (cuda, triton, eager torch; on the CPU: cpp, torch) and writes
# $OUT/bench_kernels.json (device, commit, date, build, tests, figures).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
START=$SECONDS

PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-out}
WHEELS=${WHEELS:-runs/gpu-wheels}
COUNTS=${COUNTS:-1 64 256 1024}      # streams advanced together
FRAMES=${FRAMES:-50}                 # timed ticks (20 ms frames) per count and backend
# the modules holding gpu-marked tests: the others need packages the device image lacks (fastapi,
# librosa...), and one that cannot be imported fails pytest's exit status
TESTS=${TESTS:-$(grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')}
TEST_S=${TEST_S:-300}                # the tests' share of the call, build included
DEADLINE_S=${DEADLINE_S:-570}        # everything ends by then (device: 600)

say() { echo "bench: $*"; }
fail() { echo "bench: ERROR: $1" >&2; exit "${2:-1}"; }
# shellcheck source=recipes/gpu/carried.sh
. recipes/gpu/carried.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# 1. python packages: what the image lacks of audiokit's imports (soundfile and soxr, without which
# neither audiokit.bench nor most gpu-marked test modules import; pesq, imported by test_train_loop),
# and pytest and ninja (torch.utils.cpp_extension builds with it) in case it lacks those too
MODULES="soundfile soxr"
missing=$($PYTHON recipes/gpu/gpu_helper.py missing $MODULES pesq pytest ninja)
if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
    say "installing carried packages for: $missing"
    install_carried "$WHEELS" $missing
fi
missing=$($PYTHON recipes/gpu/gpu_helper.py missing $MODULES)
[ -z "$missing" ] || fail "python packages missing: $missing (carry $WHEELS built as in recipes/gpu/README.md)" 3
missing=$($PYTHON recipes/gpu/gpu_helper.py missing pesq)
[ -z "$missing" ] || { say "no pesq: a stand-in lets the test modules that import it load"; stub_pesq; }
command -v ninja >/dev/null 2>&1 || say "no ninja on PATH: the CUDA kernels will not build (carry its wheel)"

# 2. the device
$PYTHON -c "import sys, torch; print('bench: python', sys.version.split()[0], 'torch', torch.__version__,
      'cuda', torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" ||
    fail "python cannot import torch" 3
if [[ "$DEVICE" == cuda* ]]; then
    $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
        fail "DEVICE=$DEVICE but torch sees no CUDA device (rehearse on a CPU with DEVICE=cpu)" 4
fi

# 3. build the CUDA kernels once (cached under ~/.cache/audiokit/kernels for the tests and the benchmark)
build_json=$(timeout 300 $PYTHON -c "
import json, time, torch
from audiokit.ops import cuda
began = time.perf_counter()
built = cuda.load() is not None
print(json.dumps({'cuda_built': built, 'cuda_build_s': round(time.perf_counter() - began, 1),
                  'cuda_unavailable': cuda.unavailable_reason()}))") || build_json='{"cuda_built": false, "cuda_unavailable": "the build step failed or timed out"}'
say "build: $build_json"

# 4. the gpu-marked tests
left=$((DEADLINE_S - (SECONDS - START) - 120))
test_s=$((TEST_S < left ? TEST_S : left))
tests_rc=skipped
if $PYTHON -c "import pytest" 2>/dev/null; then
    say "pytest -m gpu $TESTS (at most $test_s s)"
    timeout --kill-after=10 "$test_s" $PYTHON -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors \
        --junitxml="$OUT/gpu_tests.xml" $TESTS 2>&1 | tail -n 200 | tee "$OUT/gpu_tests.log"
    tests_rc=${PIPESTATUS[0]}
    say "tests exited with $tests_rc"
else
    say "pytest is not installed: no tests (carry its wheel in $WHEELS)"
fi

# 5. the benchmark, inside the deadline
left=$((DEADLINE_S - (SECONDS - START) - 15))
[ "$left" -gt 30 ] || fail "only $left s left for the benchmark" 5
say "benchmark on $DEVICE: streams $COUNTS, $FRAMES frames (at most $left s)"
BUILD_JSON=$build_json TESTS_RC=$tests_rc timeout --kill-after=10 "$left" $PYTHON -c "
import json, os, sys
from audiokit.bench.codec import run_device_kernel_benchmark
from audiokit.provenance import write_json
def save(result, complete=False):  # after every backend: a run cut short by the deadline keeps its figures
    result['build'] = json.loads(os.environ['BUILD_JSON'])
    result['tests'] = {'exit_status': os.environ['TESTS_RC'], 'log': 'gpu_tests.log', 'junit': 'gpu_tests.xml'}
    result['complete'] = complete
    write_json('$OUT/bench_kernels.json', result)
result = run_device_kernel_benchmark(
    device='$DEVICE', stream_counts=tuple(int(n) for n in '$COUNTS'.split()), frames=$FRAMES, measured=save)
save(result, complete=True)
for name, figures in result['by_backend'].items():
    for count, row in figures['by_streams'].items():
        print(f'bench: {name:>6} {count:>5} streams: tick p50 {row[\"tick_ms\"]:.2f} ms, p99 {row[\"tick_p99_ms\"]:.2f} ms'
              f' (step alone {row[\"step_ms\"]:.2f} ms), {row[\"streams_sustained\"]:.0f} real-time streams')
print('bench: speed-up against eager:', json.dumps(result['speedup_vs_eager']))
print('bench: skipped:', json.dumps(result['skipped']))
"
status=$?
[ "$status" = 0 ] || fail "the benchmark exited with $status" "$status"
say "done in $((SECONDS - START)) s: $OUT/bench_kernels.json"
[ "$tests_rc" = 0 ] || [ "$tests_rc" = skipped ] || exit 6  # the figures came back; the tests did not pass
