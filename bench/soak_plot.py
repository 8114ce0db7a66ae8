#!/usr/bin/env python3
"""Draws the samples of a soak (e2e_bench --soak --csv FILE) as one SVG, no dependencies.

    bench/soak_plot.py soak.csv -o soak.svg

Four panels over time: each daemon's RSS (MiB), open fds and CPU (%), and the messages
delivered per second. A curve that climbs is a leak; flat ones are the point.
"""
import argparse
import csv
import sys
from xml.sax.saxutils import escape

DAEMONS = (("hub", "#1f77b4"), ("bob", "#d62728"), ("alice", "#2ca02c"))
PANELS = (
    ("RSS, MiB", "rss_kib", 1 / 1024),
    ("open fds", "fds", 1),
    ("CPU, % of one core", "cpu_pct", 1),
)
WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP = 760, 150, 70, 110, 30, 45


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no samples")
    return rows


def nice_max(v):
    """A round axis top at or above v."""
    if v <= 0:
        return 1
    step = 10 ** (len(str(int(v))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= v:
            return m * step
    return 10 * step


def panel(out, index, title, t, series, t_max):
    y0 = TOP + index * (PANEL_H + GAP)
    plot_w = WIDTH - LEFT - RIGHT
    top = nice_max(max((max(v) for _, v, _ in series), default=1) * 1.05)
    out.append(f'<text x="{LEFT}" y="{y0 - 8}" font-size="13">{escape(title)}</text>')
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" '
               f'stroke="#999"/>')
    for k in range(5):
        value = top * k / 4
        y = y0 + PANEL_H - PANEL_H * k / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
                   f'stroke="#eee"/>')
        label = f"{value:,.0f}" if top >= 20 else f"{value:,.1f}"
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
                   f'text-anchor="end">{label}</text>')
    for k in range(6):
        x = LEFT + plot_w * k / 5
        out.append(f'<text x="{x:.1f}" y="{y0 + PANEL_H + 14}" font-size="11" '
                   f'text-anchor="middle">{t_max * k / 5:,.0f} s</text>')
    for i, (name, values, colour) in enumerate(series):
        points = " ".join(
            f"{LEFT + plot_w * ti / t_max:.1f},{y0 + PANEL_H - PANEL_H * v / top:.1f}"
            for ti, v in zip(t, values))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.2"/>')
        out.append(f'<text x="{LEFT + plot_w + 8}" y="{y0 + 14 + 16 * i}" font-size="12" '
                   f'fill="{colour}">{escape(name)}</text>')


def draw(rows, title):
    t = [float(r["t_s"]) for r in rows]
    t_max = max(t[-1], 1)
    out = []
    for i, (label, column, scale) in enumerate(PANELS):
        series = [(name, [float(r[f"{name}_{column}"]) * scale for r in rows], colour)
                  for name, colour in DAEMONS]
        panel(out, i, label, t, series, t_max)
    delivered = [float(r["delivered_per_s"]) / 1000 for r in rows]
    panel(out, len(PANELS), "delivered, thousand messages/s", t,
          [("delivered", delivered, "#555")], t_max)
    height = TOP + (len(PANELS) + 1) * (PANEL_H + GAP)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
            f'<text x="{LEFT}" y="16" font-size="14" font-weight="bold">{escape(title)}</text>')
    return head + "".join(out) + "</svg>\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="the samples, from e2e_bench --soak --csv FILE")
    parser.add_argument("-o", "--output", required=True, help="the SVG to write")
    parser.add_argument("--title", default="veil soak: hub, bob and alice over time")
    args = parser.parse_args()
    try:
        rows = read(args.csv)
        svg = draw(rows, args.title)
    except (OSError, ValueError) as e:
        print(f"soak_plot: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"soak_plot: {args.csv}: no column {e} (not a soak's samples?)", file=sys.stderr)
        return 1
    with open(args.output, "w") as f:
        f.write(svg)
    print(f"soak_plot: {len(rows)} samples -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
