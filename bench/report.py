"""The summary of one `make bench`: machine, one table of same-run ratios with their targets, and a PNG chart.

Reads the ``--json`` files the benches wrote into a folder (bench/run_all.py passes bench/.out/), rewrites
the top of bench/results.md (title, machine, summary table, the chart) and keeps the benches' own sections
below it, dropping sections of make bench's benches that did not run this time (their numbers would be from
another run; a bench run on its own, such as operator_memory, keeps its section, which names its run),
and renders bench/results.png with matplotlib's Agg backend.

    bench/.venv/bin/python bench/report.py bench/.out        # after bench/run_all.py, or any of the benches
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results.md"
CHART = HERE / "results.png"
BENCHES = ("trainer_overhead", "framework_overhead",
           "ddp_scaling", "checkpoint_io", "operator_latency", "slurm_submit")


@dataclass
class Line:
    """One row: torchyard's number, the same-run baseline's, their ratio, and the target it is judged by."""

    measure: str
    ours: str
    baseline: str
    ratio: float | None  # ours / baseline, in the row's own sense (throughput, time, ...)
    target: str
    met: bool | None  # None: no target, or not measured
    note: str = ""


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    memory = f"{int(mem.group(1)) / 2**20:.1f} GiB RAM" if mem else "unknown RAM"
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    cpu = model.group(1).strip() if model else platform.processor() or "unknown CPU"
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable), {memory}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, torch {torch_version}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )


def load(folder: Path) -> dict[str, dict]:
    return {
        name: json.loads((folder / f"{name}.json").read_text())
        for name in BENCHES
        if (folder / f"{name}.json").exists()
    }


def missing(name: str, data: dict, what: str, target: str) -> Line:
    reason = data.get(name, {}).get("unavailable") or "not run"
    return Line(what, "-", "-", None, target, None, f"unavailable: {reason}")


def framework_lines(data: dict[str, dict]) -> list[Line]:
    f = data.get("framework_overhead")
    if not f or "unavailable" in f:
        return [missing("framework_overhead", data, "trainer's own cost per iteration", "<= 3% of bare")]
    cost, bare = f["cost_us"], f["bare_us"]
    own = Line("trainer's own cost per iteration, tiny step (us over a bare loop's)",
               f"{cost['torchyard']:.1f}", f"{bare:.1f}", cost["torchyard"] / bare, "<= 0.03x",
               cost["torchyard"] / bare <= 0.03)
    if "mmengine" not in cost:
        return [own, Line("trainer's own cost and cold start vs mmengine", "-", "-", None, "<= 0.125x", None,
                          f"unavailable: {f.get('mmengine_unavailable')}")]
    start = f["start_s"]
    return [
        own,
        Line("trainer's own cost per iteration vs mmengine's (us)", f"{cost['torchyard']:.1f}",
             f"{cost['mmengine']:.1f}", cost["torchyard"] / cost["mmengine"], "<= 0.125x",
             cost["torchyard"] / cost["mmengine"] <= 0.125),
        Line("cold start to the first step vs mmengine (s)", f"{start['torchyard']:.2f}",
             f"{start['mmengine']:.2f}", start["torchyard"] / start["mmengine"], "<= 0.6x",
             start["torchyard"] / start["mmengine"] <= 0.6),
    ]


def lines(data: dict[str, dict]) -> list[Line]:
    rows: list[Line] = []
    t = data.get("trainer_overhead")
    if t and "unavailable" not in t:
        wall = t["wall"]
        ratio = wall["torchyard"] / wall["bare"]
        rows.append(
            Line(
                "trainer throughput vs bare PyTorch loop (samples/s)",
                f"{wall['torchyard']:.0f}",
                f"{wall['bare']:.0f}",
                ratio,
                ">= 0.97x",
                ratio >= 0.97,
            )
        )
        if "mmengine" in wall:
            ratio = wall["torchyard"] / wall["mmengine"]
            rows.append(
                Line(
                    f"trainer throughput vs mmengine {t.get('mmengine_version', '')} Runner (samples/s)",
                    f"{wall['torchyard']:.0f}",
                    f"{wall['mmengine']:.0f}",
                    ratio,
                    ">= 1.15x",
                    ratio >= 1.15,
                )
            )
        else:
            rows.append(
                Line(
                    "trainer throughput vs mmengine Runner",
                    "-",
                    "-",
                    None,
                    ">= 1.15x",
                    None,
                    f"unavailable: {t.get('mmengine_unavailable')}",
                )
            )
    else:
        rows.append(missing("trainer_overhead", data, "trainer throughput vs bare / mmengine", ">= 0.97x"))
    rows += framework_lines(data)
    d = data.get("ddp_scaling")
    if d and "unavailable" not in d:
        rows.append(
            Line(
                "DDP scaling 1 -> 2 CPU processes vs bare DDP's (throughput 2/1)",
                f"{d['scaling']['torchyard']:.2f}x",
                f"{d['scaling']['bare']:.2f}x",
                d["ratio"],
                ">= 0.97x",
                d["ratio"] >= 0.97,
                f"2 processes vs bare DDP: {d['median']['torchyard/2'] / d['median']['bare/2']:.2f}x",
            )
        )
    else:
        rows.append(missing("ddp_scaling", data, "DDP scaling vs bare DDP", ">= 0.97x"))
    c = data.get("checkpoint_io")
    if c and "unavailable" not in c:
        for size in ("large", "small"):
            r = c[size]
            mb = f"{r['bytes'] / 2**20:.1f} MB" if r["bytes"] >= 2**20 else f"{r['bytes'] / 2**10:.0f} KB"
            s = r["save_ms"]
            rows.append(
                Line(
                    f"checkpoint save (training waits), {mb}, vs torch.save (ms)",
                    f"{s['torchyard']:.1f}",
                    f"{s['bare']:.1f}",
                    r["save_ratio"],
                    "<= 1.1x",
                    r["save_ratio"] <= 1.1,
                    f"until durable: {s['torchyard until durable']:.1f} ms, "
                    f"{r['save_ratio_fsync']:.2f}x torch.save + fsync",
                )
            )
        r = c["large"]
        lo = r["load_ms"]
        rows.append(
            Line(
                f"checkpoint load, {r['bytes'] / 2**20:.1f} MB, vs torch.load (ms)",
                f"{lo['torchyard']:.1f}",
                f"{lo['bare']:.1f}",
                r["load_ratio"],
                "<= 1.1x",
                r["load_ratio"] <= 1.1,
            )
        )
    else:
        rows.append(missing("checkpoint_io", data, "checkpoint save/load vs torch.save/load", "<= 1.1x"))
    o = data.get("operator_latency")
    if o and "unavailable" not in o and o.get("burst") is not None:
        for q in ("p50", "p95"):
            ours, base = o[f"single_{q}"] * 1e3, o[f"base_single_{q}"] * 1e3
            rows.append(
                Line(
                    f"API create -> all pods, one 2-pod job, {q} (ms), vs plain API calls (real server)",
                    f"{ours:.1f}",
                    f"{base:.1f}",
                    ours / base,
                    "<= 1.5x" if q == "p50" else "",
                    ours / base <= 1.5 if q == "p50" else None,
                )
            )
        rows.append(
            Line(
                f"API create -> all pods, burst of {o['burst_jobs']} x {o['nodes']}-pod jobs (s), "
                "vs plain API calls",
                f"{o['burst']:.2f}",
                f"{o['base_burst']:.2f}",
                o["burst"] / o["base_burst"],
                "< 10 s",
                o["burst"] < 10,
            )
        )
        rows.append(
            Line(
                "operator CPU per reconcile during the burst (ms)",
                f"{o['cpu_per_reconcile'] * 1e3:.2f}",
                "-",
                None,
                "",
                None,
                f"{o['cpu']:.2f} s CPU for {o['reconciles']:.0f} reconciles",
            )
        )
        kubeflow = o.get("kubeflow")
        if kubeflow:
            for what, ours, theirs, unit in (
                ("one 2-pod job, p50 (ms)", o["single_p50"] * 1e3, kubeflow["single_p50"] * 1e3, ".1f"),
                (f"burst of {o['burst_jobs']} jobs (s)", o["burst"], kubeflow["burst"], ".2f"),
            ):
                rows.append(Line(f"API create -> all pods, {what}, vs Kubeflow training-operator",
                                 f"{ours:{unit}}", f"{theirs:{unit}}", ours / theirs, "", None))
        else:
            rows.append(Line("API create -> all pods vs Kubeflow training-operator", "-", "-", None, "", None,
                             f"unavailable: {o.get('kubeflow_why') or 'not run'}"))
    else:
        rows.append(
            missing("operator_latency", data, "API create -> all pods (operator vs plain calls)", "< 10 s")
        )
    s = data.get("slurm_submit")
    if s and "unavailable" not in s:
        overhead = s["torchyard_running"] - s["hand_running"]
        rows.append(
            Line(
                "Slurm submit -> RUNNING, `torchyard slurm submit` vs hand-written sbatch (ms)",
                f"{s['torchyard_running'] * 1e3:.0f}",
                f"{s['hand_running'] * 1e3:.0f}",
                s["torchyard_running"] / s["hand_running"],
                "overhead < 200 ms",
                overhead < 0.2,
                f"overhead {overhead * 1e3:+.0f} ms",
            )
        )
        alone = s["torchyard_submit"] - s["hand_submit"]
        rows.append(
            Line(
                "Slurm: the submit command alone vs `sbatch` (ms)",
                f"{s['torchyard_submit'] * 1e3:.0f}",
                f"{s['hand_submit'] * 1e3:.0f}",
                s["torchyard_submit"] / s["hand_submit"],
                "overhead < 200 ms (worst case)",
                alone < 0.2,
                f"overhead {alone * 1e3:+.0f} ms: Python start, pydantic models, render, sbatch",
            )
        )
    else:
        rows.append(
            missing(
                "slurm_submit", data, "Slurm submit -> RUNNING vs hand-written sbatch", "overhead < 200 ms"
            )
        )
    return rows


def table(rows: list[Line]) -> str:
    out = [
        "| measure | torchyard | baseline (same run) | ratio | target | met | note |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        out.append(f"| {r.measure} | {r.ours} | {r.baseline} | {ratio} | {r.target} | {met} | {r.note} |")
    return "\n".join(out)


def chart(rows: list[Line], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ratio is not None]
    fig, ax = plt.subplots(figsize=(14, 0.5 * len(shown) + 1.6))
    colors = {True: "#3a9d5d", False: "#d1495b", None: "#8c8c8c"}
    labels = [r.measure if len(r.measure) <= 80 else r.measure[:77] + "..." for r in shown][::-1]
    values = [r.ratio for r in shown][::-1]
    ax.barh(range(len(shown)), values, color=[colors[r.met] for r in shown][::-1])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.set_xlabel("torchyard / same-run baseline (log scale; 1.0 = equal)")
    for i, r in enumerate(shown[::-1]):
        target = f"  target {r.target}" if r.target else ""
        ax.text(r.ratio, i, f" {r.ratio:.2f}x ({r.ours} vs {r.baseline}){target}", va="center", fontsize=7)
    ax.set_xlim(min(0.5, min(values) / 1.5), max(values) * 80)
    ax.set_title("torchyard benchmarks: green = target met, red = missed, grey = no target", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sections(text: str, keep: set[str]) -> str:
    """The benches' own ``## name`` sections of results.md: of make bench's, those in `keep`, in BENCHES
    order; then those of benches run on their own (operator_memory), each of which names its own run."""
    found = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL))
    names = [name for name in BENCHES if name in keep and name in found]
    names += [name for name in found if name not in BENCHES and name != "summary"]
    return "\n".join(f"## {name}\n{found[name].rstrip()}\n" for name in names)


def write(data: dict[str, dict], command: str) -> list[Line]:
    rows = lines(data)
    old = RESULTS.read_text() if RESULTS.exists() else ""
    ran = {name for name, d in data.items() if "unavailable" not in d}
    head = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command}`. Every ratio compares torchyard with a baseline measured in the same run, "
        "interleaved, medians reported; the machine is small and shared, so read each ratio as +-5%.",
        "",
        "## summary",
        "",
        table(rows),
        "",
        f"![benchmark chart]({CHART.name})",
        "",
    ]
    RESULTS.write_text("\n".join(head) + "\n" + sections(old, ran))
    chart(rows, CHART)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the folder of the benches' --json files")
    parser.add_argument("--command", default="make bench", help="the command to name in results.md")
    args = parser.parse_args(argv)
    rows = write(load(args.folder), args.command)
    print(table(rows))
    print(f"\nwrote {RESULTS} and {CHART}")


if __name__ == "__main__":
    main()
