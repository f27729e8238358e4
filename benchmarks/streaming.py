"""Streaming at scale: ``partial_fit`` over 10^4 .. 10^6 rows generated in chunks, and ``predict``.

Each size runs in a fresh subprocess, which reports its peak resident memory
(``ru_maxrss``) and wall time, so one run cannot inherit another's memory.  Rows
are generated chunk by chunk (``make_peaks`` with a new seed per chunk) and never
held all at once.  The claim: peak RSS is flat in the number of rows streamed
(within +50 MB of the 10^4-row run) and time is linear in rows.

Time: every ``partial_fit`` call (one chunk) is timed on its own, by the wall clock and
by the process's CPU time (``time.process_time``: the work done, which other processes
on a shared machine slow down far less than the wall clock; one torch thread, so CPU
time is not inflated by parallel threads).  Per size the table gives the total wall
time of the loop (chunk generation included) and the medians over its chunks of the
``partial_fit`` time per row; the ratios compare those medians with the reference
size's, the first size with at least 10 chunks (10^5 rows by default; the 10^4-row size
is a single chunk, too noisy to be a reference).  For the largest size it also compares
the median chunk time of its last 10 chunks with its first 10's (does a chunk get slower
as rows accumulate, in one process).

``predict`` takes an array (the scikit-learn API), so its input and output must
fit in memory; what must not grow is everything else: the forward pass runs in
chunks of 8,192 rows.  The predict table's last column is the growth of the process's
peak RSS (``ru_maxrss``) during ``predict``: the peak after the call minus the peak
before it, with X already allocated; so it includes the predictions' own memory (and
the peak before includes the warm-up fit, so a smaller allocation may not show).
Every subprocess uses one torch thread.

    python benchmarks/streaming.py              # 1e4, 1e5, 1e6 rows (3-5 min on a 2-core machine)
    python benchmarks/streaming.py --quick      # smoke run
    python benchmarks/streaming.py --memory none 1000000   # sTik: every batch kept, two ways

``--memory`` takes several depths (``none`` for ``memory_depth=None``) and streams each in
turn in the same run, then compares them: the per-step cost of ``memory_depth=None`` (one
running sum) must not grow along the stream, where a finite depth larger than the stream's
batches re-sums every stored block at every step.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args):
    import numpy as np
    import torch

    from sklearn_slimtrain import SlimTrainRegressor
    from sklearn_slimtrain.datasets import make_peaks

    torch.set_num_threads(1)
    model = SlimTrainRegressor(memory_depth=args.memory[0], batch_size=args.batch_size, random_state=0)
    X, y = make_peaks(args.chunk, random_state=10**6)
    model.partial_fit(X, y)  # warm-up chunk: imports, allocations, first optimizer state
    base = _rss_mb()
    if args.what == "fit":
        chunk_seconds, chunk_cpu = [], []
        start = time.perf_counter()
        for i in range(args.rows // args.chunk):
            X, y = make_peaks(args.chunk, random_state=i)
            tic, cpu = time.perf_counter(), time.process_time()
            model.partial_fit(X, y)
            chunk_seconds.append(time.perf_counter() - tic)
            chunk_cpu.append(time.process_time() - cpu)
        seconds = time.perf_counter() - start
        out = {"rows": model.t_ - args.chunk, "seconds": seconds, "chunk_seconds": chunk_seconds,
               "chunk_cpu": chunk_cpu}
    else:
        X = np.empty((args.rows, 2))
        for start in range(0, args.rows, args.chunk):
            X[start : start + args.chunk] = make_peaks(args.chunk, random_state=start)[0][: args.rows - start]
        before = _rss_mb()
        start = time.perf_counter()
        pred = model.predict(X)
        seconds = time.perf_counter() - start
        out = {"rows": len(pred), "seconds": seconds, "x_mb": X.nbytes / 2**20, "pred_mb": pred.nbytes / 2**20,
               "before_mb": before}
    out.update(peak_mb=_rss_mb(), base_mb=base)
    print(json.dumps(out))


def memory_depth(text):
    """``--memory`` values: an int, or ``none`` for ``memory_depth=None`` (every batch kept)."""
    return None if text.lower() == "none" else int(text)


def run(what, rows, args, memory):
    cmd = [sys.executable, __file__, "--child", "--what", what, "--rows", str(rows), "--chunk", str(args.chunk),
           "--batch-size", str(args.batch_size), "--memory", str(memory).lower()]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _stream(args, memory, several):
    """The partial_fit table of one memory depth; returns its largest run's summary."""
    import statistics

    from _common import markdown_table

    print(f"SlimTrainRegressor(memory_depth={memory}, batch_size={args.batch_size}), "
          f"partial_fit on chunks of {args.chunk} rows of make_peaks.\n")
    fits = [run("fit", n, args, memory) for n in args.sizes]
    ref = fits[0]
    for r in fits:  # medians over the chunks of partial_fit's time per row, in microseconds
        r["wall_us"] = 1e6 * statistics.median(r["chunk_seconds"]) / args.chunk
        r["cpu_us"] = 1e6 * statistics.median(r["chunk_cpu"]) / args.chunk
    chunks = [len(r["chunk_seconds"]) for r in fits]
    timing_ref = next((r for r, c in zip(fits, chunks) if c >= 10), fits[chunks.index(max(chunks))])
    rows = []
    for r in fits:
        c = r["chunk_cpu"]
        rows.append([r["rows"], len(c), r["seconds"], r["wall_us"], r["wall_us"] / timing_ref["wall_us"],
                     r["cpu_us"], f"{1e6 * min(c) / args.chunk:.4g}-{1e6 * max(c) / args.chunk:.4g}",
                     r["cpu_us"] / timing_ref["cpu_us"], r["peak_mb"], r["peak_mb"] - ref["peak_mb"]])
    print(f"## partial_fit (memory_depth={memory})\n" if several else "## partial_fit\n")
    print(f"Per-row times are medians over the chunks (one partial_fit call each); ratios against the "
          f"{timing_ref['rows']}-row size's medians.\n")
    print(markdown_table(["rows streamed", "chunks", "wall seconds (loop)", "wall us per row", "wall ratio",
                          "CPU us per row", "CPU us per row, chunk range", "CPU ratio", "peak RSS (MB)",
                          "peak RSS - first (MB)"], rows))
    drift = [float("nan")] * 2
    if len(fits[-1]["chunk_cpu"]) >= 20:
        drift = [statistics.median(c[-10:]) / statistics.median(c[:10])
                 for c in (fits[-1]["chunk_seconds"], fits[-1]["chunk_cpu"])]
        print(f"\nWithin the {fits[-1]['rows']}-row run, median time of its last 10 chunks / its first 10: "
              f"wall {drift[0]:.3f}, CPU {drift[1]:.3f}.")
    worst = max(r["peak_mb"] - ref["peak_mb"] for r in fits)
    print(f"\nPeak RSS grows by at most {worst:.1f} MB from {ref['rows']} to {fits[-1]['rows']} rows "
          f"(goal: within +50 MB).")
    return {"drift": drift[1], "cpu_us": fits[-1]["cpu_us"], "peak_mb": fits[-1]["peak_mb"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per partial_fit call")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory", type=memory_depth, nargs="+", default=[5],
                        help="memory_depth, or several (each streamed in turn); 'none' for None")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="fit", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.quick:
        args.sizes, args.chunk = [500, 1000], 500

    import torch
    from _common import machine, markdown_table

    torch.set_num_threads(1)  # as every subprocess (the parent runs no torch work): machine() reports it
    print(f"# Streaming benchmark ({machine()})\n")
    summary = []
    for i, memory in enumerate(args.memory):
        print("\n" if i else "", end="")
        summary.append(_stream(args, memory, several=len(args.memory) > 1))
    if len(args.memory) > 1:
        print("\n## Memory depths compared\n")
        print(f"The {args.sizes[-1]}-row run of each depth: its last 10 chunks against its first 10 (median CPU "
              "time per chunk), its median CPU time per row against the first depth's, and its peak RSS.\n")
        first = summary[0]["cpu_us"]
        print(markdown_table(["memory_depth", "CPU: last 10 / first 10 chunks", "CPU us per row",
                              f"ratio to memory_depth={args.memory[0]}", "peak RSS (MB)"],
                             [[str(m), s["drift"], s["cpu_us"], s["cpu_us"] / first, s["peak_mb"]]
                              for m, s in zip(args.memory, summary)]))
    preds = [run("predict", n, args, args.memory[0]) for n in args.sizes]
    rows = [[r["rows"], r["seconds"], r["x_mb"], r["pred_mb"], r["peak_mb"] - r["before_mb"]] for r in preds]
    print("\n## predict\n")
    print(markdown_table(["rows", "seconds", "X (MB, allocated before)", "predictions (MB)",
                          "peak RSS growth during predict (MB, predictions included)"], rows))


if __name__ == "__main__":
    main()
