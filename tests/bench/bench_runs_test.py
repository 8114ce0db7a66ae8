#!/usr/bin/env python3
"""bench/bench_runs.py (make bench RUNS=N): worst and median per row, targets judged in every run,
and the benchmark itself run N times."""
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "bench_runs.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_runs  # noqa: E402


def table(mb_ratio, p50_us, p50_ratio, per_second):
    # As e2e_bench prints it (its Row()), with a line that is not a row between.
    return textwrap.dedent(f"""\
        veil end to end through a hub
        | case                                         |             veil |     stunnel path |        plain TCP | veil/stunnel |
        |----------------------------------------------|------------------|------------------|------------------|---------|
        | throughput 64 KiB, MB/s                      |      1234.5 MB/s |      1000.0 MB/s |      3000.0 MB/s |   {mb_ratio:.2f}x |
        | throughput 64 B, messages/s                  |    {per_second} /s |       500000 /s |      900000 /s |   2.00x |
          (veil: 3 messages refused by backpressure and not counted)
        | echo round trip 64 B, p50                    |        {p50_us} us |          100 us |           50 us |   {p50_ratio:.2f}x |
        | RSS per idle channel, responder sidecar      |          3.5 KiB |                - |                - |       - |
        """)


class SummaryTest(unittest.TestCase):
    def test_worst_median_and_targets(self):
        runs = [bench_runs.parse_table(t) for t in (
            table(1.30, 90, 0.90, 2100000), table(1.10, 120, 1.20, 2500000),
            table(1.25, 95, 0.95, 2200000))]
        self.assertEqual(runs[0]["throughput 64 KiB, MB/s"], (1234.5, "MB/s", 1.30))
        self.assertEqual(runs[0]["RSS per idle channel, responder sidecar"], (3.5, "KiB", None))
        lines = bench_runs.summarise(runs)
        rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]]
                for l in lines if l.startswith("| ") and not l.startswith("| case")}
        # Throughput: the worst ratio is the lowest; 1.10 < 1.2 in one run of three.
        self.assertEqual(rows["throughput 64 KiB, MB/s"][:3], ["1.10x", "1.25x", "3"])
        self.assertIn("missed (2 of 3 runs)", rows["throughput 64 KiB, MB/s"][3])
        # Latency: the worst ratio is the highest.
        self.assertEqual(rows["echo round trip 64 B, p50"][:2], ["1.20x", "0.95x"])
        self.assertIn("missed (2 of 3 runs)", rows["echo round trip 64 B, p50"][3])
        # A target on the veil figure itself: the figures shown are the veil's.
        self.assertEqual(rows["throughput 64 B, messages/s"][:2], ["2,100,000 /s", "2,200,000 /s"])
        self.assertEqual(rows["throughput 64 B, messages/s"][3], ">= 2,000,000 /s: met in every run")
        self.assertEqual(rows["RSS per idle channel, responder sidecar"][:2], ["3.5 KiB", "3.5 KiB"])
        self.assertIn("met in every run", rows["RSS per idle channel, responder sidecar"][3])
        self.assertEqual(lines[-1], "2 target(s) missed in at least one run")

    def test_every_target_met(self):
        runs = [bench_runs.parse_table(table(1.3, 90, 0.9, 2100000)) for _ in range(3)]
        self.assertEqual(bench_runs.summarise(runs)[-1], "every target met in every run")


class CommandTest(unittest.TestCase):
    def test_runs_the_benchmark_each_time_and_summarises(self):
        with tempfile.TemporaryDirectory() as d:
            count = os.path.join(d, "count")
            fake = os.path.join(d, "fake_bench.py")
            with open(fake, "w") as f:
                f.write(textwrap.dedent(f"""\
                    import sys
                    with open({count!r}, "a") as c:
                        c.write("x")
                    n = len(open({count!r}).read())
                    print({table(1.0, 100, 1.0, 1000)!r}.replace("1.00x", f"{{n}}.00x", 1))
                    """))
            out = subprocess.run([sys.executable, SCRIPT, "--runs", "3", "--", sys.executable, fake],
                                 capture_output=True, text=True, check=True).stdout
            with open(count) as c:
                self.assertEqual(c.read(), "xxx")
            self.assertIn("## run 3 of 3", out)
            self.assertIn("summary of 3 runs", out)
            self.assertIn("| throughput 64 KiB, MB/s | 1.00x | 2.00x | 3 |", out)

    def test_a_failing_benchmark_fails(self):
        r = subprocess.run([sys.executable, SCRIPT, "--runs", "2", "--", "false"],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exited with 1", r.stderr)

    def test_saved_outputs(self):
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i, ratio in enumerate((1.3, 1.4)):
                paths.append(os.path.join(d, f"run{i}.txt"))
                with open(paths[-1], "w") as f:
                    f.write(table(ratio, 90, 0.9, 2100000))
            out = subprocess.run([sys.executable, SCRIPT, "--from", *paths], capture_output=True,
                                 text=True, check=True).stdout
            self.assertIn("| throughput 64 KiB, MB/s | 1.30x | 1.35x | 2 |", out)


if __name__ == "__main__":
    unittest.main()
