"""Wall time and the longest silent stretch of a command: the longest gap between two lines it
writes on stderr (the start and the end of the command count as lines).

    python benchmarks/silent_stretches.py [--log FILE] -- dgm train score-sde --data digits ...

Every stderr line (split at ``\\n`` or ``\\r``, so a terminal bar's redraws count) is echoed with
its time since the start; stdout is passed through. The last lines printed are the wall time, the
longest gap and the line that ended it (also when the command is stopped: SIGTERM or Ctrl-C
ends the command and the figures cover the time until then).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log", help="also write the timestamped stderr lines to this file")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give the command to run after --")
    log = open(args.log, "w") if args.log else None  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    stamps: list[tuple[float, str]] = [(0.0, "<start>")]
    # stopped (timeout, Ctrl-C), it stops the command and still reports what it measured
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: proc.terminate())

    def pump_stdout() -> None:
        for raw in iter(proc.stdout.readline, b""):
            sys.stdout.write(raw.decode(errors="replace"))

    reader = threading.Thread(target=pump_stdout, daemon=True)
    reader.start()
    buf = b""
    while True:
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
        now = time.perf_counter() - t0
        for raw in lines:
            text = raw.decode(errors="replace").rstrip()
            if not text:
                continue
            stamps.append((now, text))
            line = f"[{now:8.1f}s] {text}"
            print(line, file=sys.stderr, flush=True)
            if log:
                log.write(line + "\n")
    rc = proc.wait()
    reader.join()
    wall = time.perf_counter() - t0
    stamps.append((wall, "<end>"))
    gap, i = max((stamps[k + 1][0] - stamps[k][0], k) for k in range(len(stamps) - 1))
    summary = [
        f"wall time: {wall:.1f} s (exit code {rc}), {len(stamps) - 2} stderr lines",
        f"longest silent stretch: {gap:.1f} s, from {stamps[i][0]:.1f} s "
        f"({stamps[i][1][:90]!r}) to {stamps[i + 1][0]:.1f} s ({stamps[i + 1][1][:90]!r})",
    ]
    for line in summary:
        print(line, file=sys.stderr, flush=True)
        if log:
            log.write(line + "\n")
    if log:
        log.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
