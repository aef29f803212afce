"""Headless Firefox for the page tests, without geckodriver (neither Debian nor PyPI ships a trusted
build): Debian's ``firefox-esr`` driven over its own Marionette protocol, and a PulseAudio null sink
so that its AudioContext has an output device to run on (without one it stays ``suspended``)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from serve_support import free_port

FIREFOX, PULSEAUDIO = "firefox-esr", "pulseaudio"

PREFERENCES = {
    "media.navigator.streams.fake": True,  # a fake microphone: a sine tone
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "app.update.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "browser.startup.homepage_override.mstone": "ignore",
}


class Marionette:
    """A minimal client of Firefox's Marionette protocol (level 3): ``length:json`` messages over TCP,
    commands ``[0, id, name, params]``, replies ``[1, id, error, result]``."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buffer = b""
        self.last_id = 0
        hello = self._read()
        assert hello.get("marionetteProtocol") == 3, hello

    def _read(self):
        while b":" not in self.buffer:
            self.buffer += self._receive()
        head, _, rest = self.buffer.partition(b":")
        size = int(head)
        while len(rest) < size:
            rest += self._receive()
        self.buffer = rest[size:]
        return json.loads(rest[:size])

    def _receive(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("Firefox closed the Marionette connection")
        return chunk

    def call(self, name: str, params: dict | None = None):
        self.last_id += 1
        body = json.dumps([0, self.last_id, name, params or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        _, reply_id, error, result = self._read()
        assert reply_id == self.last_id, (reply_id, self.last_id)
        if error:
            raise RuntimeError(f"{name}: {error.get('error')}: {error.get('message')}")
        return result

    # -- the WebDriver commands the tests use --------------------------------------------------------
    def get(self, url: str) -> None:
        self.call("WebDriver:Navigate", {"url": url})

    def execute(self, script: str):
        return self.call("WebDriver:ExecuteScript", {"script": script, "args": []})["value"]

    def click(self, css: str) -> None:
        element = self.call("WebDriver:FindElement", {"using": "css selector", "value": css})["value"]
        self.call("WebDriver:ElementClick", {"id": next(iter(element.values()))})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("WebDriver:TakeScreenshot", {})["value"]))


@contextlib.contextmanager
def null_sink(folder: Path) -> Iterator[str]:
    """A PulseAudio daemon with one null sink, private to ``folder``; yields its ``PULSE_SERVER``."""
    assert shutil.which(PULSEAUDIO), "pulseaudio missing: `make setup` installs it"
    folder.mkdir(parents=True, exist_ok=True)
    address = folder / "native"
    command = [
        PULSEAUDIO, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
        "-L", "module-null-sink sink_name=audiokit_null",
        "-L", f"module-native-protocol-unix auth-anonymous=1 socket={address}",
    ]  # fmt: skip
    env = {**os.environ, "PULSE_RUNTIME_PATH": str(folder), "HOME": str(folder)}
    daemon = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not address.exists():
            assert daemon.poll() is None, "pulseaudio exited at start"
            assert time.monotonic() < deadline, "pulseaudio did not open its socket"
            time.sleep(0.05)
        yield f"unix:{address}"
    finally:
        daemon.terminate()
        daemon.wait(10)


@contextlib.contextmanager
def firefox(folder: Path) -> Iterator[Marionette]:
    """Headless ``firefox-esr`` with a fresh profile in ``folder``, a fake microphone and a null audio
    output; yields a Marionette session."""
    assert shutil.which(FIREFOX), "firefox-esr missing: `make setup` installs it"
    profile = folder / "profile"
    profile.mkdir(parents=True)
    port = free_port()
    prefs = {**PREFERENCES, "marionette.port": port}
    lines = [f'user_pref("{key}", {json.dumps(value)});\n' for key, value in prefs.items()]
    (profile / "user.js").write_text("".join(lines))
    with null_sink(folder / "pulse") as pulse_server:
        env = {**os.environ, "HOME": str(folder), "PULSE_SERVER": pulse_server}
        command = [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(profile)]
        log = (folder / "firefox.log").open("w")
        browser = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            session = Marionette(port)
            session.call("WebDriver:NewSession", {"capabilities": {}})
            yield session
            session.call("Marionette:Quit", {"flags": ["eForceQuit"]})
            browser.wait(30)
        finally:
            if browser.poll() is None:
                browser.kill()
                browser.wait(10)
            log.close()
