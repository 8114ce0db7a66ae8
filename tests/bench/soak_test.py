#!/usr/bin/env python3
"""The soak (e2e_bench --soak, VEIL_SOAK_SECONDS) for a few seconds on real daemons, and its plot
(bench/soak_plot.py), including what the plot says of files that are not a soak's samples."""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLOT = os.path.join(ROOT, "bench", "soak_plot.py")
BUILD = None
COLUMNS = ["t_s", "hub_rss_kib", "bob_rss_kib", "alice_rss_kib", "hub_fds", "bob_fds",
           "alice_fds", "hub_cpu_pct", "bob_cpu_pct", "alice_cpu_pct", "delivered_per_s",
           "channels_opened", "channels_open", "refused"]


class SoakTest(unittest.TestCase):
    def test_a_short_soak_samples_every_second_loses_nothing_and_plots(self):
        with tempfile.TemporaryDirectory() as d:
            samples = os.path.join(d, "soak.csv")
            env = dict(os.environ, VEIL_SOAK_SECONDS="6")
            run = subprocess.run(
                [os.path.join(BUILD, "bench", "e2e_bench"), "--soak", "--csv", samples],
                env=env, capture_output=True, text=True, timeout=240)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn("(none lost)", run.stdout)
            self.assertIn("(0 failures)", run.stdout)
            self.assertIn("too short to judge", run.stdout)
            with open(samples, newline="") as f:
                reader = csv.DictReader(f)
                self.assertEqual(reader.fieldnames, COLUMNS)
                rows = list(reader)
            self.assertGreaterEqual(len(rows), 5)
            for row in rows:
                for daemon in ("hub", "bob", "alice"):
                    self.assertGreater(int(row[f"{daemon}_rss_kib"]), 1000)
                    self.assertGreater(int(row[f"{daemon}_fds"]), 3)
                    self.assertGreaterEqual(float(row[f"{daemon}_cpu_pct"]), 0)
            self.assertGreater(sum(float(r["delivered_per_s"]) for r in rows), 0)
            self.assertGreater(int(rows[-1]["channels_opened"]), 5, "channels open and close")

            svg = os.path.join(d, "soak.svg")
            plot = subprocess.run([sys.executable, PLOT, samples, "-o", svg],
                                  capture_output=True, text=True)
            self.assertEqual(plot.returncode, 0, plot.stderr)
            tree = ET.parse(svg)
            lines = tree.getroot().findall("{http://www.w3.org/2000/svg}polyline")
            self.assertEqual(len(lines), 3 * 3 + 1)  # RSS, fds, CPU per daemon; delivered
            for line in lines:
                self.assertEqual(len(line.get("points").split()), len(rows))

    def test_the_plot_refuses_what_is_not_a_soaks_samples(self):
        with tempfile.TemporaryDirectory() as d:
            empty = os.path.join(d, "empty.csv")
            open(empty, "w").close()
            other = os.path.join(d, "other.csv")
            with open(other, "w") as f:
                f.write("a,b\n1,2\n")
            for path, message in ((empty, "no samples"), (other, "no column"),
                                  (os.path.join(d, "missing.csv"), "No such file")):
                out = os.path.join(d, "out.svg")
                plot = subprocess.run([sys.executable, PLOT, path, "-o", out],
                                      capture_output=True, text=True)
                self.assertEqual(plot.returncode, 1, path)
                self.assertIn(message, plot.stderr)
                self.assertNotIn("Traceback", plot.stderr)
                self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    args, rest = parser.parse_known_args()
    BUILD = os.path.abspath(args.build)
    unittest.main(argv=[sys.argv[0]] + rest)
