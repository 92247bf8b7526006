"""A program that owns a real engine, is generating, and then ends the way it is told.

Run as ``python tests/integration/lifecycle_owner.py MODE`` by ``test_lifecycle.py``. It prints
``generating`` on stdout once a request is in flight in the engine, then:

- ``wait``: keeps generating until something outside ends it (SIGTERM, SIGKILL, SIGINT);
- ``exit``: returns from the main block while a request runs, without closing the generator
  (the interpreter's normal exit);
- ``exception``: raises an uncaught exception while a request runs;
- ``os_exit``: calls ``os._exit(3)`` while a request runs (no clean-up of any kind).

The generation runs on a daemon thread, as a service's request handler would, so that the main
thread is free to end the program; it loops, so a request is always in flight.
"""

from __future__ import annotations

import os
import sys
import threading
import time

MODES = ("wait", "exit", "exception", "os_exit")


def main(mode: str) -> None:
    from s1_integrations import BudgetForcedGenerator, ThinkingBudget

    gen = BudgetForcedGenerator(dtype="float32", seed=0)
    long = ThinkingBudget(min_thinking_tokens=400, max_answer_tokens=8)

    def keep_generating() -> None:
        while True:
            gen.generate(["What is 12 + 34?"] * 4, long)

    threading.Thread(target=keep_generating, daemon=True, name="requests").start()
    deadline = time.monotonic() + 120
    while gen.engine.num_unfinished_requests() == 0:
        if time.monotonic() > deadline:
            raise SystemExit("no request reached the engine in 120 s")
        time.sleep(0.05)
    print("generating", flush=True)
    time.sleep(0.5)  # well inside a request: its prefill is done, its decoding is running
    if mode == "wait":
        while True:
            time.sleep(1)
    elif mode == "exit":
        return
    elif mode == "exception":
        raise RuntimeError("the owner failed while generating")
    elif mode == "os_exit":
        os._exit(3)


if __name__ == "__main__":  # vLLM starts its processes with spawn
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        raise SystemExit(f"usage: lifecycle_owner.py {{{','.join(MODES)}}}")
    main(sys.argv[1])
