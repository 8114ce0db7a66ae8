#!/usr/bin/env python3
"""Runs e2e_bench several times and summarises its table: each row's worst and median.

    bench/bench_runs.py --runs 3 -- build-release/bench/e2e_bench [ARGS]
    bench/bench_runs.py --from run1.txt run2.txt run3.txt   # summarise saved outputs

Each run's output is printed as it comes. The summary takes every table row of the form
"| case | veil | peer | plain | ratio |". A row with a ratio is judged by it, any other by its
veil figure. Which way is worse depends on the figure's unit: for us and KiB more is worse,
for /s and MB/s less is. A row with a target (TARGETS) also says whether the target held in
every run. That is how a target counts as met: in each of three consecutive runs
(docs/performance.md).
"""
import argparse
import re
import statistics
import subprocess
import sys

# Case -> (which figure, comparison, bound). "ratio" is the row's last column, "veil" its first.
TARGETS = {
    "throughput 64 KiB, MB/s": ("ratio", ">=", 1.2),
    "throughput 1 KiB, MB/s": ("ratio", ">=", 1.0),
    "throughput 64 B, messages/s": ("veil", ">=", 2_000_000),
    "echo round trip 64 B, p50": ("ratio", "<=", 1.0),
    "echo round trip 64 B, p99": ("ratio", "<=", 1.0),
    "secure channels established / s (8 at once)": ("veil", ">=", 3000),
    "RSS per idle channel, responder sidecar": ("veil", "<=", 4.0),
    "RSS per idle channel, initiator sidecar": ("veil", "<=", 4.0),
    "portal throughput, 1 KiB writes, MB/s": ("ratio", ">=", 1.2),
    "portal throughput, 64 KiB writes, MB/s": ("ratio", ">=", 1.2),
    "portal request/response 64 B, p50": ("ratio", "<=", 1.0),
    "RSS per idle portal session, outlet sidecar": ("veil", "<=", 4.0),
    "RSS per idle portal session, inlet sidecar": ("veil", "<=", 4.0),
    "over WebSocket: throughput 64 KiB, MB/s": ("ratio", ">=", 0.9),
    "over Unix socket: throughput 64 KiB, MB/s": ("ratio", ">=", 1.0),
}

ROW = re.compile(r"^\|\s*(?P<case>[^|]+?)\s*\|\s*(?P<veil>[^|]+?)\s*\|\s*[^|]*\|\s*[^|]*\|"
                 r"\s*(?P<ratio>[^|]+?)\s*\|\s*$")
FIGURE = re.compile(r"^(?P<value>-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*(?P<unit>\S*)$")


def parse_figure(text):
    """(value, unit) of "1,234.5 MB/s" or "1.23x"; None for "-" and anything else."""
    m = FIGURE.match(text.strip())
    if not m:
        return None
    return float(m.group("value").replace(",", "")), m.group("unit")


def parse_table(output):
    """{case: (veil value, veil unit, ratio or None)} of one run's output, in order."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("summary of "):  # (a saved output of this script: its own table)
            break
        m = ROW.match(line)
        if not m or m.group("case") == "case" or m.group("case").startswith("-"):
            continue
        veil = parse_figure(m.group("veil"))
        if veil is None:
            continue
        ratio = parse_figure(m.group("ratio"))
        rows[m.group("case")] = (veil[0], veil[1], ratio[0] if ratio and ratio[1] == "x" else None)
    return rows


def lower_is_better(unit):
    return unit in ("us", "KiB", "ms", "s")


def summarise(runs):
    """The summary table's lines for a list of parse_table results."""
    lines = [f"summary of {len(runs)} runs: worst and median of each row "
             "(the ratio where there is one, else the veil figure)", "",
             "| case | worst | median | runs | target |", "|---|---|---|---|---|"]
    cases = []
    for run in runs:
        for case in run:
            if case not in cases:
                cases.append(case)
    missed = 0
    for case in cases:
        present = [run[case] for run in runs if case in run]
        unit = present[0][1]
        # The ratio where there is one, unless the row's target is on the veil figure itself.
        use_ratio = (all(r[2] is not None for r in present)
                     and TARGETS.get(case, ("ratio",))[0] == "ratio")
        values = [r[2] if use_ratio else r[0] for r in present]
        shown_unit = "x" if use_ratio else unit
        worse_high = lower_is_better(unit)
        worst = max(values) if worse_high else min(values)
        median = statistics.median(values)
        target = ""
        if case in TARGETS:
            which, op, bound = TARGETS[case]
            judged = [r[2] if which == "ratio" else r[0] for r in present]
            if which == "ratio" and any(v is None for v in judged):
                target = "no ratio"
            else:
                ok = all(v >= bound if op == ">=" else v <= bound for v in judged)
                held = sum(1 for v in judged if (v >= bound if op == ">=" else v <= bound))
                suffix = "x" if which == "ratio" else f" {unit}"
                bound_text = f"{bound:g}" if which == "ratio" or bound < 1000 else f"{bound:,.0f}"
                target = (f"{op} {bound_text}{suffix}: "
                          + ("met in every run" if ok else f"missed ({held} of {len(judged)} runs)"))
                missed += 0 if ok else 1
        lines.append(f"| {case} | {fmt(worst, shown_unit)} | {fmt(median, shown_unit)} | "
                     f"{len(values)} | {target} |")
    lines.append("")
    lines.append(f"{missed} target(s) missed in at least one run" if missed
                 else "every target met in every run")
    return lines


def fmt(value, unit):
    if unit == "x":
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--from", dest="files", nargs="+", help="saved outputs to summarise")
    parser.add_argument("command", nargs="*", help="the benchmark and its arguments (after --)")
    args = parser.parse_args(argv)
    outputs = []
    if args.files:
        for path in args.files:
            with open(path, encoding="utf-8") as f:
                outputs.append(f.read())
    else:
        if not args.command or args.runs < 1:
            parser.error("give the benchmark command after --, and --runs 1 or more")
        for n in range(1, args.runs + 1):
            print(f"\n## run {n} of {args.runs}\n", flush=True)
            proc = subprocess.Popen(args.command, stdout=subprocess.PIPE, text=True)
            out = []
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                out.append(line)
            if proc.wait() != 0:
                print(f"run {n}: {args.command[0]} exited with {proc.returncode}", file=sys.stderr)
                return 1
            outputs.append("".join(out))
    runs = [parse_table(o) for o in outputs]
    if not any(runs):
        print("no table rows found in the output", file=sys.stderr)
        return 1
    print()
    print("\n".join(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
