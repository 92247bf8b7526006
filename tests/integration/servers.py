"""Real ``vllm serve`` processes on 127.0.0.1 for the remote-backend tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from s1_integrations.engine.server import server_argv

NO_PLUGIN_SITE = Path(__file__).parent / "no_plugin_site"
START_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
    """vLLM's OpenAI-compatible server in its own process group, started and stopped here."""

    def __init__(
        self,
        model: str,
        *,
        plugin: bool = True,
        name_processor: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        """``plugin``: the entry point is visible; ``name_processor``: ``--logits-processors``."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if not plugin:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(NO_PLUGIN_SITE), env.get("PYTHONPATH")) if p
            )
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the server)
            prefix=f"vllm-serve-{self.port}-", suffix=".log", delete=False
        )
        argv = server_argv(
            model, port=self.port, extra=extra, python=sys.executable, name_processor=name_processor
        )
        self.process = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> VllmServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"vllm serve did not start in {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole server (API server, engine core, workers) at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a Prometheus metric's samples from /metrics, over those with ``labels``."""
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if not line.startswith(name) or line[len(name)] not in "{ ":
                continue
            series, value = line.rsplit(" ", 1)
            if all(label in series for label in wanted):
                total += float(value)
        return total


class S1Serve(VllmServer):
    """``s1-integrations serve`` (the command users run) in its own process group.

    Unlike :class:`VllmServer`, which runs vLLM's server module directly, this goes through
    the CLI, so it has everything the command sets up around the server (its guardian).
    """

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        # Not VllmServer.__init__, which would start vLLM's server module itself.
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the server)
            prefix=f"s1-serve-{self.port}-", suffix=".log", delete=False
        )
        argv = [sys.executable, "-m", "s1_integrations.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*argv, *extra], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
