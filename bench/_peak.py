"""Run a Python script (or ``-c`` code) in this process; print its peak RSS when it exits.

``python -m bench._peak run_study.py --data ...`` behaves like ``python run_study.py --data
...`` and finally prints ``PEAK_RSS_KB <n>``. The peak must be read inside the process: the
kernel's ``ru_maxrss`` of a child also counts the parent it was forked from (Linux carries the
high-water mark across ``exec``), so a large parent would hide the child's own figure. This
module imports nothing heavy, so it adds nothing to the peak it reports.
"""

import atexit
import runpy
import sys

MARK = "PEAK_RSS_KB"


def peak_kb() -> int:
    """This process's peak resident set size in KiB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bench._peak SCRIPT [ARGS] | -c CODE [ARGS]")
    atexit.register(lambda: print(f"{MARK} {peak_kb()}", flush=True))
    if sys.argv[1] == "-c":
        code = sys.argv[2]
        sys.argv = ["-c", *sys.argv[3:]]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
