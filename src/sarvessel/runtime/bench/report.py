"""The benchmark report: one JSON document (machine-readable, host info included), a Markdown
rendering of it, and its PNG plots.

The JSON is the record; the Markdown and the plots are drawn from it alone
(:func:`write_report`), so a report can be re-rendered from an old JSON. Sections that a run did
not measure are absent or carry a ``skipped`` reason, and are rendered as such.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.bench.latency import Stage
from sarvessel.runtime.bench.plots import bar_chart, scaling_chart, stacked_bar_chart
from sarvessel.runtime.io.outputs import atomic_open, json_safe, write_json

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "mean_ms_per_tile", "render_markdown", "scaling_summary", "write_report"]

#: Identifies the JSON layout (bump when a field changes meaning).
SCHEMA = "sarvessel-bench/1"
#: Peak RSS a 700 MPx CPU-fallback run must stay under (MB; issue acceptance).
RSS_LIMIT_MB = 1500.0
_STAGES = [s.value for s in Stage if s is not Stage.TOTAL]
#: A bar of the energy plot: label, J/MPx, palette index.
_Bar = tuple[str, "float | None", int]


def mean_ms_per_tile(run: Mapping[str, Any]) -> dict[str, float]:
    """Mean ms per tile run by stage (the stage's seconds over the scene / tiles run): the
    segments of the latency breakdown, which add up to the run's busy time per tile."""
    tiles = max(1, int(run.get("tiles_run") or 0))
    t = run.get("timings_s", {})
    return {s: 1e3 * float(t.get(s, 0.0)) / tiles for s in _STAGES}


def scaling_summary(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Is time linear in pixels and memory flat? A least-squares line of wall seconds on
    megapixels (s/MPx, intercept, R², worst relative deviation of a point from the line) and
    the spread of peak RSS (min, max, MB per 100 MPx)."""
    pts = [p for p in points if p.get("wall_s") is not None]
    if len(pts) < 2:
        return {"points": len(pts)}
    x = np.array([p["megapixels"] for p in pts], float)
    y = np.array([p["wall_s"] for p in pts], float)
    a, b = np.polyfit(x, y, 1)
    pred = a * x + b
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    out: dict[str, Any] = {
        "points": len(pts),
        "seconds_per_mpx": round(float(a), 5),
        "intercept_s": round(float(b), 3),
        "r2": round(1.0 - ss_res / ss_tot, 5) if ss_tot > 0 else None,
        "max_rel_deviation": round(float(np.max(np.abs(y - pred) / y)), 4),
    }
    rp = [p for p in pts if p.get("peak_rss_mb") is not None]
    if rp:
        rss = np.array([p["peak_rss_mb"] for p in rp], float)
        xr = np.array([p["megapixels"] for p in rp], float)
        slope = float(np.polyfit(xr, rss, 1)[0]) if len(rp) > 1 else 0.0
        out |= {"peak_rss_mb_min": float(rss.min()), "peak_rss_mb_max": float(rss.max()),
                "peak_rss_mb_per_100_mpx": round(100 * slope, 2),
                "rss_limit_mb": RSS_LIMIT_MB,
                "within_rss_limit": bool(rss.max() <= RSS_LIMIT_MB)}
        widths = np.array([p.get("width") or 0 for p in rp], float)
        if len(rp) > 1 and np.ptp(widths) > 0:
            # the pipeline holds one band of tile rows: memory follows the width, not the area
            a, b = np.polyfit(widths, rss, 1)
            out |= {"peak_rss_mb_per_1000_columns": round(1e3 * float(a), 2),
                    "peak_rss_mb_at_zero_width": round(float(b), 1)}
    return out


def write_report(report: Mapping[str, Any], out_dir: Path | str, *, plots: bool = True
                 ) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and (plots=True, the default) the PNG plots into
    ``out_dir``; return the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if plots:
        paths |= write_plots(report, out)
    paths["json"] = write_json(out / "bench.json", json_safe(dict(report)))
    md = render_markdown(report, plots={k: p.name for k, p in paths.items() if k != "json"})
    with atomic_open(out / "bench.md") as fh:
        fh.write(md)
    paths["md"] = out / "bench.md"
    return paths


def write_plots(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The PNGs: throughput by backend, latency breakdown, scaling, energy."""
    paths: dict[str, Path] = {}
    runs = [r for r in report.get("backends", []) if not r.get("skipped")]
    where = _host_line(report.get("host", {}))
    if runs:
        scene = f"{runs[0]['megapixels']:.0f} MPx scene"
        paths["throughput"] = bar_chart(
            out / "throughput.png", [(r["label"], r.get("mpx_per_s")) for r in runs],
            title=f"Scene throughput by backend ({scene}, end to end)", unit="MPx/s",
            colours=[_colour(r) for r in runs], note=where)
        breakdown = {s: [mean_ms_per_tile(r)[s] for r in runs] for s in _STAGES}
        mixed = len({r.get("tile") for r in runs}) > 1  # say which tiles are larger
        paths["latency"] = stacked_bar_chart(
            out / "latency.png",
            [f"{r['label']} ({r['tile']}²)" if mixed else r["label"] for r in runs], breakdown,
            title=f"Mean time per tile by stage ({scene})", unit="ms per tile", note=where)
    sc = report.get("scaling") or {}
    pts = [p for p in sc.get("points", []) if not p.get("skipped")]
    if pts:
        fit = sc.get("summary", {})
        line = ((fit["seconds_per_mpx"], fit["intercept_s"])
                if "seconds_per_mpx" in fit else None)
        paths["scaling"] = scaling_chart(
            out / "scaling.png", pts, fit=line, rss_limit_mb=RSS_LIMIT_MB,
            title=f"Scaling, backend {sc.get('backend', '?')}: wall time and peak memory "
                  "against scene size", note=where)
    energy = _energy_bars(report)
    if energy:
        bars, note = energy
        paths["energy"] = bar_chart(out / "energy.png", [(k, v) for k, v, _ in bars],
                                    colours=[c for _, _, c in bars],
                                    title="Energy per scene megapixel", unit="J per MPx",
                                    note=note)
    return paths


def render_markdown(report: Mapping[str, Any], *, plots: Mapping[str, str] | None = None
                    ) -> str:
    """The report as Markdown: host, backends, networks and peers, scaling, FPGA side,
    accuracy, notes, and the plots by file name."""
    lines: list[str] = [f"# sarvessel benchmark ({report.get('mode', 'run')})", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    host = report.get("host", {})
    lines += [f"Machine: {_host_line(host)}.", ""]
    libs = host.get("libraries", {})
    if libs:
        lines += ["Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()) + ".", ""]
    la0, la1 = host.get("load_average"), report.get("load_average_end")
    if la0 or la1:
        lines += [f"Load average (1/5/15 min) at start {la0}, at end {la1}: on a shared "
                  "machine every figure is provisional.", ""]
    lines += _backends_md(report)
    lines += _networks_md(report.get("peers") or {})
    lines += _scaling_md(report.get("scaling") or {})
    lines += _fpga_md(report.get("fpga") or {})
    lines += _accuracy_md(report.get("accuracy") or {})
    notes = report.get("notes") or []
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    if plots:
        lines += ["## Plots", "", *[f"![{k}]({v})" for k, v in plots.items()], ""]
    return "\n".join(lines).rstrip() + "\n"


# -- sections -------------------------------------------------------------------------------


def _backends_md(report: Mapping[str, Any]) -> list[str]:
    runs = report.get("backends") or []
    if not runs:
        return []
    ok = [r for r in runs if not r.get("skipped")]
    ref = next((r for r in ok if r.get("backend") == "onnx"), None)
    head = "## Backends"
    if ok:
        r0 = ok[0]
        head += (f" on one scene ({r0['height']:,} × {r0['width']:,} px, "
                 f"{r0['megapixels']:.1f} MPx, tile {r0['tile']}, overlap {r0['overlap']}, "
                 f"batch {r0['batch']}, threads {r0.get('threads') or 'default'})")
    out = [head, "",
           "Per-tile latency is p50 / p99 ms per tile of each stage (read, preprocess and merge "
           "per tile row; infer and post per batch; write once per scene). MPx/s is end to end "
           "(outputs written); time × onnx is this run's wall time over the CPU fallback's.", "",
           "| backend | MPx/s | wall s | time × onnx | read | preprocess | infer | post | merge "
           "| write | peak RSS MB | J/MPx | detections |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.get("skipped"):
            out.append(f"| {r['label']} | skipped: {_md(r['skipped'])} |" + " |" * 11)
            continue
        lat = r.get("latency_ms_per_tile", {})
        cells = [_pq(lat.get(s)) for s in _STAGES]
        ratio = (f"{r['wall_s'] / ref['wall_s']:.2f}" if ref and ref is not r
                 and ref.get("wall_s") and ref["megapixels"] == r["megapixels"] else "")
        out.append(f"| {r['label']} | {_n(r.get('mpx_per_s'))} | {_n(r.get('wall_s'))} | "
                   f"{ratio} | " + " | ".join(cells) + f" | {_n(r.get('peak_rss_mb'))} | "
                   f"{_energy_cell(r.get('energy'))} | {r.get('detections', '')} |")
    return [*out, ""]


def _networks_md(peers: Mapping[str, Any]) -> list[str]:
    if not peers:
        return []
    out = ["## Peers: the network per tile, same threads, one run", ""]
    if peers.get("skipped"):
        out += [f"Peer not measured: {peers['skipped']}", ""]
    arch = peers.get("architecture")
    if arch:
        out += [f"Peer: {arch.get('name', 'YOLOv8n')}: {arch['params']:,} parameters "
                f"(published 3.2 M; fused {arch.get('params_reference', 3_151_904):,}), "
                f"{arch['gflops_640']:.2f} GFLOPs at 640² (published 8.7): "
                f"{'matches' if arch.get('ok') else 'DOES NOT match'} the published "
                "architecture (±1 % parameters, ±3 % GFLOPs).", ""]
    nets = peers.get("networks") or {}
    if nets:
        ref = peers.get("reference", "")
        batches = sorted({int(k[5:]) for v in nets.values() for k in v if k.startswith("batch")})
        head = "| network | tile | " + " | ".join(
            f"ms/tile b{b} | × {ref} b{b}" for b in batches) + " | ms/MPx b" + \
            f"{batches[-1]} | × {ref} per MPx |"
        out += [f"Inference only (onnxruntime, {peers.get('threads') or 'default'} threads, "
                "random tiles, median of the repeats); × is the network's time over "
                f"{ref}'s (per tile at the same batch, and per megapixel).", "",
                head, "|" + "---|" * (3 + 2 * len(batches)) + "---|"]
        for name, v in nets.items():
            cells = []
            for b in batches:
                m = v.get(f"batch{b}", {}).get("ms_per_tile_median")
                r = (peers.get("ratios", {}).get(name, {}).get(f"batch{b}"))
                cells += [_n(m), "" if r is None else f"{r:.2f}"]
            last = v.get(f"batch{batches[-1]}", {}).get("ms_per_mpx_median")
            rm = peers.get("ratios", {}).get(name, {}).get("per_mpx")
            out.append(f"| {name} | {v['tile']} | " + " | ".join(cells) +
                       f" | {_n(last)} | {'' if rm is None else f'{rm:.2f}'} |")
        out.append("")
    return out


def _scaling_md(sc: Mapping[str, Any]) -> list[str]:
    pts = sc.get("points") or []
    if not pts:
        return []
    out = [f"## Scaling: generated scenes, backend {sc.get('backend', '?')}", "",
           "| scene | size px | MPx | wall s | MPx/s | peak RSS MB | detections |",
           "|---|---|---|---|---|---|---|"]
    for p in pts:
        if p.get("skipped"):
            out.append(f"| {p.get('label', '')} | skipped: {_md(p['skipped'])} | | | | | |")
            continue
        out.append(f"| {p.get('scene_id', '')} | {p['height']:,} × {p['width']:,} | "
                   f"{p['megapixels']:.1f} | {_n(p['wall_s'])} | {_n(p.get('mpx_per_s'))} | "
                   f"{_n(p.get('peak_rss_mb'))} | {p.get('detections', '')} |")
    s = sc.get("summary") or {}
    if "seconds_per_mpx" in s:
        b = s["intercept_s"]
        out += ["", f"Time = {s['seconds_per_mpx'] * 1e3:.1f} ms/MPx × MPx "
                f"{'+' if b >= 0 else '−'} {abs(b):.2f} s (R² {s['r2']}, worst point "
                f"{100 * s['max_rel_deviation']:.1f} % off the line)."]
    if "peak_rss_mb_max" in s:
        out.append(f"Peak RSS {s['peak_rss_mb_min']:.0f}–{s['peak_rss_mb_max']:.0f} MB "
                   f"({s['peak_rss_mb_per_100_mpx']:+.1f} MB per 100 MPx); limit "
                   f"{s['rss_limit_mb']:.0f} MB: "
                   f"{'within' if s['within_rss_limit'] else 'EXCEEDED'}.")
    if "peak_rss_mb_per_1000_columns" in s:
        out.append(f"The pipeline holds one band of tile rows, so memory follows the scene's "
                   f"width, not its area: {s['peak_rss_mb_at_zero_width']:.0f} MB + "
                   f"{s['peak_rss_mb_per_1000_columns']:.1f} MB per 1,000 columns.")
    return [*out, ""]


def _fpga_md(f: Mapping[str, Any]) -> list[str]:
    if not f:
        return []
    out = ["## FPGA side", ""]
    est = f.get("estimate")
    dpu = f.get("published_dpu", {})
    out += ["| system | ms per tile or chip | tiles/s | ~700 MPx scene | power | source |",
            "|---|---|---|---|---|---|"]
    if est:
        pp = f.get("power_projection") or {}
        out.append(f"| ours: FINN estimate, {est.get('board')} @ {est.get('clock_mhz'):g} MHz, "
                   f"{est.get('tile_size')}² tiles | {_n(est.get('ms_per_tile'))} (accelerator)"
                   f" | {_n(est.get('tiles_per_s'))} | {_n(est.get('scene_seconds'))} s "
                   f"({est.get('tiles_per_scene', '?'):,} tiles) | "
                   f"{_n(pp.get('watts'))} W, {_n(pp.get('joules'))} J (estimate) | "
                   f"`{est.get('source')}` |")
    bp = f.get("board_projection")
    if bp:
        out.append(f"| ours + host stages measured here ({bp.get('host', '')}) | "
                   f"{bp['accel_ms_per_tile']:.2f} accel, {bp['host_ms_per_tile_total']:.2f} "
                   f"host | | {bp['scene_s_overlapped']:.1f} s overlapped, "
                   f"{bp['scene_s_serial']:.1f} s serial ({bp['bound_by']}-bound) | | derived |")
    sim = f.get("sim")
    if sim:
        out.append(f"| ours, `{sim.get('label')}` run here (the accelerator simulated on this "
                   f"CPU) | | | {_n(sim.get('scene_s_at_this_rate'))} s at "
                   f"{_n(sim.get('mpx_per_s'))} MPx/s | | measured |")
    if dpu:
        out.append(f"| published DPU system: {dpu['model']} | {dpu['pre_ms']:g} / "
                   f"{dpu['accel_ms']:g} / {dpu['post_ms']:g} (pre / DPU / post per "
                   f"{dpu['chip']}² chip) | | < {dpu['scene_seconds_below']:g} s | "
                   f"< {dpu['watts_below']:g} W | {dpu['source']} |")
        mp = dpu.get("ms_per_mpx", {})
        out += ["", f"Published per MPx: {mp.get('pre')} / {mp.get('accel')} / "
                f"{mp.get('post')} ms pre / DPU / post ({dpu.get('chips_per_scene')} chips per "
                f"scene: {dpu.get('scene_s_serial_from_chip_ms')} s if run one after another)."]
    if bp:
        hs = bp["host_ms_per_tile"]
        out += [f"Host stages per {est.get('tile_size') if est else ''}² tile here: " +
                ", ".join(f"{k} {v:.2f} ms" for k, v in hs.items()) +
                " (x86 here; the board's Cortex-A53s are slower)."]
    if f.get("power_projection"):
        out += ["", "`" + f["power_projection"]["line"] + "`"]
    if f.get("power_projection_host_bound"):
        out += ["", "At the host-bound rate above: `" +
                f["power_projection_host_bound"]["line"] + "`"]
    if f.get("note"):
        out += ["", f["note"]]
    return [*out, ""]


def _accuracy_md(acc: Mapping[str, Any]) -> list[str]:
    if not acc:
        return []
    xv, ss = acc.get("xview3") or {}, acc.get("ssdd") or {}
    out = ["## Accuracy beside speed", ""]
    if xv.get("skipped"):
        out += [f"xView3 on generated scenes not measured: {xv['skipped']}", ""]
    if ss.get("skipped"):
        out += [f"SSDD not measured: {ss['skipped']}", ""]
    head = (f"| configuration | xView3 aggregate ({xv.get('scenes', '?')} held-out generated "
            f"scenes, seeds {xv.get('seeds', '?')}) | detect F1 | SSDD AP50 "
            f"({ss.get('split', '?')}, {ss.get('images', '?')} images) | SSDD AP50-95 |")
    out += [head, "|---|---|---|---|---|"]
    names = list(dict.fromkeys([*(xv.get("results") or {}), *(ss.get("results") or {})]))
    for name in names:
        x = (xv.get("results") or {}).get(name, {})
        s = (ss.get("results") or {}).get(name, {})
        out.append(f"| {name} | {_n(x.get('aggregate'), 4) if 'aggregate' in x else _skip(x)} | "
                   f"{_n(x.get('loc_fscore'), 4)} | "
                   f"{_n(s.get('ap50'), 4) if 'ap50' in s else _skip(s)} | "
                   f"{_n(s.get('ap50_95'), 4)} |")
    models = {k: v for k, v in (ss.get("models") or {}).items()}
    if models:
        out += ["", "SSDD models: " + "; ".join(f"{k}: `{v}`" for k, v in models.items()) + "."]
    return [*out, ""]


# -- helpers ------------------------------------------------------------------------------


def _host_line(h: Mapping[str, Any]) -> str:
    if not h:
        return "unknown machine"
    cores = f"{h.get('logical_cpus')} logical CPUs"
    if h.get("physical_cores"):
        cores += f" ({h['physical_cores']} physical)"
    simd = ", ".join(h.get("simd") or []) or "no SIMD flags read"
    ort = (h.get("libraries") or {}).get("onnxruntime", "?")
    return (f"{h.get('cpu_model') or h.get('machine')}, {cores}, {simd}; "
            f"{h.get('memory_gb')} GB; onnxruntime {ort}")


def _energy_bars(report: Mapping[str, Any]) -> tuple[list[_Bar], str] | None:
    bars: list[_Bar] = []
    notes = set()
    for r in report.get("backends", []):
        if r.get("skipped"):
            continue
        e = r.get("energy") or {}
        if e.get("joules_per_mpx") is not None:
            bars.append((f"{r['label']} (measured, {e.get('sensor')})", e["joules_per_mpx"], 0))
        elif e.get("note"):
            notes.add(e["note"])
    f = report.get("fpga") or {}
    pp = f.get("power_projection")
    if pp:
        bars.append(("KV260 projection, accelerator-bound (estimate)",
                     pp.get("joules_per_mpx"), 1))
    hb = f.get("power_projection_host_bound")
    if hb:
        bars.append(("KV260 projection, host-bound as measured here (estimate)",
                     hb.get("joules_per_mpx"), 1))
    dpu = f.get("published_dpu")
    if dpu:
        bars.append((f"paper bound (< {dpu['watts_below']:g} W x {dpu['scene_seconds_below']:g} "
                     f"s / {dpu['scene_mpx']:g} MPx)",
                     dpu["watts_below"] * dpu["scene_seconds_below"] / dpu["scene_mpx"], 5))
    if not bars:
        return None
    note = "; ".join(sorted(notes))
    if notes:
        note = f"measured runs: {note}"
    return bars, note


def _colour(run: Mapping[str, Any]) -> int:
    label = str(run.get("label", ""))
    if run.get("spec", "").startswith("peer"):
        return 5
    if label.startswith(("sim", "fpga")):
        return 2
    return {"onnx": 0, "cfar": 1, "noop": 7}.get(label, 4)


def _energy_cell(e: Mapping[str, Any] | None) -> str:
    if not e:
        return ""
    if e.get("joules_per_mpx") is not None:
        return _n(e["joules_per_mpx"], 3)
    return "no sensor" if e.get("sensor") == "none" else "n/a"


def _pq(lat: Mapping[str, Any] | None) -> str:
    if not lat:
        return ""
    return f"{_n(lat['p50_ms'])} / {_n(lat['p99_ms'])}"


def _n(x: Any, digits: int | None = None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if digits is not None:
        return f"{x:.{digits}f}"
    ax = abs(float(x))
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _skip(d: Mapping[str, Any]) -> str:
    return f"n/a ({_md(d['skipped'])})" if d.get("skipped") else ""


def _md(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")



def load_report(path: Path | str) -> dict[str, Any]:
    """A report JSON written by :func:`write_report`."""
    return json.loads(Path(path).read_text())
