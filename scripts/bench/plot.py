#!/usr/bin/python3
"""Plot `mediamesh-bench` results.

    /usr/bin/python3 scripts/bench/plot.py results.json out.png

results.json: {"title": "optional subtitle", "runs": [{"server": ..., "protocol": ...,
"client": ..., "streams": 1, "viewers": 100, "cpu_percent": 3.6,
"latency_ms": {"p50": 1.1, "p99": 2.0, "max": 5.0}, ...}, ...]}

One PNG, two panels side by side, runs with streams == 1 only:
  (a) server CPU (% of one core) vs viewers
  (b) latency p50 (solid) and p99 (dashed) in ms vs viewers
x axis log scale; one colour per (server, protocol, client) series. Runs that repeat a
series at the same viewer count are averaged. Needs only matplotlib (Debian:
python3-matplotlib) and renders headless (Agg).
"""
import json
import math
import sys
from collections import defaultdict

try:
    import matplotlib
except ImportError:
    sys.exit("plot.py: no matplotlib in this python; use /usr/bin/python3 (apt-get install python3-matplotlib)")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

SERVER_ORDER = {"mediamesh": 0, "nginx-rtmp": 1, "gstreamer": 2}
MARKERS = {"mediamesh": "o", "nginx-rtmp": "s", "gstreamer": "^"}


def num(v):
    """A finite float, or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def mean(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def load_series(runs):
    """{(server, protocol, client): [(viewers, cpu, p50, p99), ...]} sorted by viewers."""
    acc = defaultdict(lambda: defaultdict(lambda: ([], [], [])))
    for r in runs:
        if not isinstance(r, dict) or r.get("streams", 1) != 1:
            continue
        viewers = num(r.get("viewers"))
        if viewers is None or viewers <= 0:
            continue
        key = (str(r.get("server", "?")), str(r.get("protocol", "?")), str(r.get("client", "?")))
        lat = r.get("latency_ms") if isinstance(r.get("latency_ms"), dict) else {}
        cpu, p50, p99 = acc[key][viewers]
        cpu.append(num(r.get("cpu_percent")))
        p50.append(num(lat.get("p50")))
        p99.append(num(lat.get("p99")))
    series = {}
    for key, by_v in acc.items():
        series[key] = [(v, mean(c), mean(a), mean(b)) for v, (c, a, b) in sorted(by_v.items())]
    return series


def log_x(ax, viewers):
    ax.set_xscale("log")
    lo, hi = min(viewers), max(viewers)
    ticks = sorted(set([10 ** e for e in range(int(math.floor(math.log10(lo))),
                                               int(math.ceil(math.log10(hi))) + 1)] + list(viewers)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo / 1.5, hi * 1.5)
    ax.set_xlabel("viewers (log scale)")


def plot_line(ax, pts, idx, **kw):
    xs = [p[0] for p in pts if p[idx] is not None]
    ys = [p[idx] for p in pts if p[idx] is not None]
    if xs:
        ax.plot(xs, ys, **kw)
    return ys


def main(argv):
    if len(argv) != 3:
        print("usage: " + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        data = json.load(f)
    runs = data.get("runs", []) if isinstance(data, dict) else data
    series = load_series(runs)
    if not series:
        print("no runs with streams == 1 and viewers > 0", file=sys.stderr)
        return 1

    keys = sorted(series, key=lambda k: (SERVER_ORDER.get(k[0], 9), k))
    colours = plt.get_cmap("tab10")
    fig, (ax_cpu, ax_lat) = plt.subplots(1, 2, figsize=(13, 5.2))
    all_viewers, all_lat = set(), []
    handles = []
    for i, key in enumerate(keys):
        pts = series[key]
        colour = colours(i % 10)
        marker = MARKERS.get(key[0], "D")
        label = " / ".join(key)
        all_viewers.update(p[0] for p in pts)
        plot_line(ax_cpu, pts, 1, color=colour, marker=marker, lw=1.8)
        all_lat += plot_line(ax_lat, pts, 2, color=colour, marker=marker, lw=1.8, ls="-")
        all_lat += plot_line(ax_lat, pts, 3, color=colour, marker=marker, lw=1.4, ls="--",
                             mfc="none")
        handles.append(Line2D([], [], color=colour, marker=marker, lw=1.8, label=label))

    for ax in (ax_cpu, ax_lat):
        log_x(ax, sorted(all_viewers))
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", axis="y", alpha=0.12)

    ax_cpu.set_title("(a) server CPU")
    ax_cpu.set_ylabel("CPU, % of one core")
    ax_cpu.set_ylim(bottom=0)

    ax_lat.set_title("(b) latency: p50 solid, p99 dashed")
    pos = [v for v in all_lat if v > 0]
    if pos and max(pos) / min(pos) > 30:
        ax_lat.set_yscale("log")
        ax_lat.set_ylabel("latency, ms (log scale)")
    else:
        ax_lat.set_ylim(bottom=0)
        ax_lat.set_ylabel("latency, ms")

    style = [Line2D([], [], color="grey", ls="-", label="p50"),
             Line2D([], [], color="grey", ls="--", label="p99")]
    ax_cpu.legend(handles=handles, title="server / protocol / client", fontsize=8,
                  title_fontsize=8, loc="best")
    ax_lat.legend(handles=style, fontsize=8, loc="upper left")

    fig.suptitle("mediamesh-bench: one stream, N viewers", fontsize=13, y=0.985)
    subtitle = data.get("title") if isinstance(data, dict) else None
    if subtitle:
        fig.text(0.5, 0.925, str(subtitle), ha="center", va="center", fontsize=9, color="#444")
    fig.tight_layout(rect=(0, 0, 1, 0.925 if subtitle else 0.955))
    fig.savefig(argv[2], dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
