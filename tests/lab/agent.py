"""Run Python functions inside a network namespace: a child process answering calls.

``NsAgent(ns).call("networkd.net.nat_rules:plan_chain", ...)`` imports the function in a
child started with ``ip netns exec`` and returns its (pickled) result. Module-level state
in the child lives as long as the agent, so adapters keep their caches between calls.
Tests only: the pipe carries pickles between the test and its own child.
"""

import importlib
import os
import pickle
import struct
import subprocess
import sys
import traceback
from typing import Any, BinaryIO, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def _recv(stream: BinaryIO) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError("agent closed")
    (size,) = struct.unpack("!I", header)
    return pickle.loads(stream.read(size))


class AgentError(RuntimeError):
    """The function raised in the agent; the message holds its traceback."""


class NsAgent:
    def __init__(self, netns: str) -> None:
        self.netns = netns
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.lab.agent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )

    def call(self, func: str, *args: Any, **kwargs: Any) -> Any:
        assert (
            self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        )
        _send(self.proc.stdin, (func, args, kwargs))  # type: ignore[arg-type]
        ok, value = _recv(self.proc.stdout)  # type: ignore[arg-type]
        if not ok:
            raise AgentError(f"{func} failed in netns {self.netns}:\n{value}")
        return value

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def __enter__(self) -> "NsAgent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # prints of called code must not corrupt the channel
    while True:
        try:
            func, args, kwargs = _recv(stdin)  # type: ignore[arg-type]
        except EOFError:
            return 0
        module_name, _, attr = func.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
            _send(stdout, (True, target(*args, **kwargs)))  # type: ignore[arg-type]
        except BaseException:
            _send(stdout, (False, traceback.format_exc()))  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(serve())
