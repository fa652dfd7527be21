#!/usr/bin/env python
"""Tiles the pre-screen skips and the recall it costs (docs/prescreen.md).

(a) Generated held-out scenes (seeds >= 900, generated as scripts/eval_scenes.py does): per scene,
the tiles skipped for no data, for land (:func:`~sarvessel.runtime.prescreen.sea_mask`) and by
the brightness gate at each threshold (:func:`~sarvessel.runtime.prescreen.bright_mask`), and

- label level: labelled objects lost because every tile covering their centre is skipped;
- detector level: the shipped scene model runs once per scene through ``run_scene`` without a
  pre-screen, each tile's detections recorded; the pipeline's row loop (nodata test, land
  filter, merge) is then replayed with only the tiles a pre-screen keeps. The replay of every
  tile must reproduce ``run_scene``'s detections exactly (checked), so each configuration's
  detections are what the pipeline would output with that pre-screen. True positives: labels
  matched one-to-one to a detection within ``--match-px``. The land pre-screen must change no
  detection: asserted.

(b) SSDD test images (8-bit grey, tiled as ``sarvessel eval`` tiles them): tiles skipped and
ships lost (every tile covering the box centre skipped) per grey-level threshold.

(c) OpenSARShip (real Sentinel-1 GRD ship chips, calibrated sigma0), with ``--opensarship``: the
ships whose own brightest VV pixel stays below each gate (an upper bound on what the gate can
lose on real ships).

    python scripts/prescreen_eval.py --seeds 900-931 --root out/prescreen_scenes \\
        --json out/prescreen.json --markdown out/prescreen.md
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile
from scipy.optimize import linear_sum_assignment

from sarvessel.evaluation.datasets import load_image_grey
from sarvessel.evaluation.evaluate import image_tiles, load_dataset
from sarvessel.runtime.contract import OVERLAP, TILE_SIZE
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.detector import Detector, make_detector
from sarvessel.runtime.io.outputs import write_json
from sarvessel.runtime.io.scene import Scene, open_scene
from sarvessel.runtime.pipeline import PipelineConfig, run_scene
from sarvessel.runtime.post.nms import SceneMerger
from sarvessel.runtime.preprocess import VH, VV, to_uint8, valid_mask
from sarvessel.runtime.prescreen import bright_mask, db_to_u8, sea_mask
from sarvessel.runtime.tiling import tile_starts
from sarvessel.synth.generate import synthesize_scene

log = logging.getLogger("prescreen_eval")


def parse_seeds(text: str) -> list[int]:
    """'900-903' or '900,905' → list of seeds."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


class RecordingPost:
    """A post stage that passes the wrapped one's detections on and keeps them, per tile, with
    a checksum of the tile's VV pixels (to align them with the replay's tiles)."""

    def __init__(self, post) -> None:
        self.post = post
        self.fingerprint = post.fingerprint
        self.tiles: list[tuple[int, Detections]] = []

    def __call__(self, raw, batch: np.ndarray) -> list[Detections]:
        out = self.post(raw, batch)
        sums = batch[:, 0].reshape(len(batch), -1).sum(axis=1, dtype=np.int64)
        self.tiles.extend(zip(sums.tolist(), out, strict=True))
        return out


def row_bands(scene: Scene, tile: int, row_starts: list[int]):
    """(r0, u8 [2, tile, W'], valid [tile, W']) per tile row, as the pipeline makes them."""
    width = max(scene.width, tile)
    for r0 in row_starts:
        n = min(r0 + tile, scene.height) - r0
        u8 = np.zeros((2, tile, width), np.uint8)
        valid = np.zeros((tile, width), bool)
        vv = scene.read_band_rows(0, r0, r0 + n).copy()
        vh = scene.read_band_rows(1, r0, r0 + n)
        to_uint8(vv, VV, out=u8[0, :n, : scene.width])
        to_uint8(vh, VH, out=u8[1, :n, : scene.width])
        valid[:n, : scene.width] = valid_mask(vv) & valid_mask(vh)
        yield r0, u8, valid


def read_labels(path: Path) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out[row["scene_id"]].append(row)
    return out


def match_count(dets: Detections, pts: np.ndarray, radius: float) -> int:
    """Labels matched one-to-one (Hungarian on distance) to a detection within ``radius``."""
    if not len(dets) or not len(pts):
        return 0
    d = np.hypot(dets.rows[:, None] - pts[None, :, 0], dets.cols[:, None] - pts[None, :, 1])
    cost = np.where(d <= radius, d, 1e9)
    r, c = linear_sum_assignment(cost)
    return int(np.count_nonzero(cost[r, c] <= radius))


def covered_lost(pts: np.ndarray, row_starts: list[int], col_starts: list[int], tile: int,
                 keep: np.ndarray) -> np.ndarray:
    """True for each point (row, col) whose every covering tile has ``keep`` False."""
    rs, cs = np.asarray(row_starts), np.asarray(col_starts)
    lost = np.ones(len(pts), bool)
    for k, (r, c) in enumerate(pts):
        ri = np.flatnonzero((rs <= r) & (r < rs + tile))
        ci = np.flatnonzero((cs <= c) & (c < cs + tile))
        lost[k] = not keep[np.ix_(ri, ci)].any()
    return lost


def replay(rows: list[dict], scene: Scene, kept: np.ndarray, radius: float) -> Detections:
    """The pipeline's row loop on recorded tile detections, running only tiles ``kept``
    (``[rows, cols]`` bool): nodata test, shift, land filter, merge."""
    merger = SceneMerger(radius_px=radius)
    for i, row in enumerate(rows):
        found = [d for j, d in row["dets"] if kept[i, j]]
        dets = Detections.concat(found)
        if len(dets):
            dets = dets.select(~scene.on_land(dets.rows, dets.cols))
        merger.add(dets, row0=row["r0"])
    return merger.finish()


def eval_scene(folder: Path, labels: list[dict[str, str]], detector: Detector,
               gates: dict[str, int], match_px: float) -> dict:
    tile, overlap = TILE_SIZE, OVERLAP
    config = PipelineConfig()
    post = RecordingPost(detector.post)
    rec = Detector(detector.backend, post)
    with open_scene(folder) as scene:
        t0 = time.perf_counter()
        res = run_scene(scene, rec, config=config)
        t_run = time.perf_counter() - t0
        row_starts = tile_starts(scene.height, tile, overlap)
        col_starts = tile_starts(scene.width, tile, overlap)
        shape = (len(row_starts), len(col_starts))
        has_data = np.zeros(shape, bool)
        sea = np.zeros(shape, bool)
        sea0 = np.zeros(shape, bool)
        bright = {name: np.zeros(shape, bool) for name in gates}
        t_sea = t_bright = 0.0
        n_bright_calls = 0
        sea_px = 0
        sea_px_above = dict.fromkeys(gates, 0)
        rows = []
        it = iter(post.tiles)
        for i, (r0, u8, valid) in enumerate(row_bands(scene, tile, row_starts)):
            has_data[i] = [valid[:tile, c : c + tile].any() for c in col_starts]
            a = max(0, row_starts[i - 1] + tile - r0) if i else 0  # each scene row once
            n = min(tile, scene.height - r0)
            if "owiMask" in scene.aux_names:
                open_sea = scene.read_aux_rows("owiMask", r0 + a, r0 + n) == 0
            else:
                open_sea = np.ones((n - a, scene.width), bool)
            open_sea &= valid[a:n, : scene.width]
            sea_px += int(open_sea.sum())
            for name, thr in gates.items():
                sea_px_above[name] += int(np.count_nonzero(
                    (u8[0, a:n, : scene.width] >= thr) & open_sea))
            t1 = time.perf_counter()
            sea[i] = sea_mask(scene, r0, col_starts, tile)
            t_sea += time.perf_counter() - t1
            sea0[i] = sea_mask(scene, r0, col_starts, tile, margin_px=0.0)
            for name, thr in gates.items():
                t1 = time.perf_counter()
                bright[name][i] = bright_mask(u8, valid, col_starts, tile, min_u8=thr)
                t_bright += time.perf_counter() - t1
                n_bright_calls += 1
            dets_row = []
            for j, c in enumerate(col_starts):
                if not has_data[i, j]:
                    continue
                checksum, d = next(it)
                if checksum != int(u8[0, :tile, c : c + tile].sum(dtype=np.int64)):
                    raise RuntimeError(f"{folder.name}: tile ({r0}, {c}) out of step with the run")
                if len(d):
                    v = valid[:tile, c : c + tile]
                    rr = np.clip(d.rows.astype(np.intp), 0, v.shape[0] - 1)
                    cc = np.clip(d.cols.astype(np.intp), 0, v.shape[1] - 1)
                    dets_row.append((j, d.select(v[rr, cc]).shifted(r0, c)))
            rows.append({"r0": r0, "dets": dets_row})
        if next(it, None) is not None:
            raise RuntimeError(f"{folder.name}: the run made more tiles than the replay")

        full = replay(rows, scene, has_data, config.nms_radius_px)
        same = (len(full) == len(res.detections)
                and np.array_equal(full.rows, res.detections.rows)
                and np.array_equal(full.cols, res.detections.cols)
                and np.array_equal(full.scores, res.detections.scores))
        if not same:
            raise RuntimeError(f"{folder.name}: the replay does not reproduce run_scene "
                               f"({len(full)} vs {len(res.detections)} detections)")

        pts = np.array([[float(r["detect_scene_row"]), float(r["detect_scene_column"])]
                        for r in labels]).reshape(-1, 2)
        vessel = np.array([r["is_vessel"] == "True" for r in labels], bool)
        # pre-merge detections the land filter keeps, from tiles the land test would skip
        land_skip = has_data & ~sea
        kept_from_land = sum(
            int(np.count_nonzero(~scene.on_land(d.rows, d.cols)))
            for i, row in enumerate(rows) for j, d in row["dets"] if land_skip[i, j])
        configs = {"none": has_data, "land": has_data & sea}
        configs.update({f"land+gate {name}": has_data & sea & b for name, b in bright.items()})
        out_cfg = {}
        for name, keep in configs.items():
            dets = full if name == "none" else replay(rows, scene, keep, config.nms_radius_px)
            lost = covered_lost(pts, row_starts, col_starts, tile, keep)
            out_cfg[name] = {
                "tiles_run": int(keep.sum()),
                "detections": len(dets),
                "tp_all": match_count(dets, pts, match_px),
                "tp_vessel": match_count(dets, pts[vessel], match_px),
                "labels_uncovered_all": int(lost.sum()),
                "labels_uncovered_vessel": int((lost & vessel).sum()),
            }
        land = out_cfg["land"]
        none = out_cfg["none"]
        land_same = land["detections"] == none["detections"] and np.array_equal(
            replay(rows, scene, configs["land"], config.nms_radius_px).rows, full.rows)
        if kept_from_land or not land_same:
            raise AssertionError(f"{folder.name}: the land pre-screen changed the detections "
                                 f"({kept_from_land} kept detections came from skipped tiles)")
        n_tiles = shape[0] * shape[1]
        return {
            "scene_id": scene.scene_id,
            "tiles_total": n_tiles,
            "tiles_nodata": int((~has_data).sum()),
            "tiles_land": int((has_data & ~sea).sum()),
            "tiles_land_margin0": int((has_data & ~sea0).sum()),
            "tiles_dark": {name: int((has_data & sea & ~b).sum()) for name, b in bright.items()},
            "sea_pixels": sea_px,
            "sea_pixels_at_or_above": sea_px_above,
            "labels_all": len(pts),
            "labels_vessel": int(vessel.sum()),
            "land_kept_detections_from_skipped_tiles": kept_from_land,
            "configs": out_cfg,
            "sea_mask_us_per_tile": 1e6 * t_sea / n_tiles,
            "bright_mask_us_per_tile": 1e6 * t_bright / (n_tiles * max(1, len(gates))),
            "run_scene_s": t_run,
        }


def eval_ssdd(split: str, levels: list[int]) -> dict:
    """Per grey-level threshold: SSDD tiles skipped and ships lost."""
    items = load_dataset("ssdd", split=split)
    n_tiles = 0
    tiles_dark = dict.fromkeys(levels, 0)
    ships_lost = dict.fromkeys(levels, 0)
    n_ships = 0
    t_gate = 0.0
    tile_max: list[int] = []
    for item in items:
        grey = load_image_grey(item.path)
        windows, batch = image_tiles(grey, tile=TILE_SIZE, channels=1, overlap=OVERLAP)
        n_tiles += len(windows)
        tile_max += [int(b[0].max()) for b in batch]
        cx = 0.5 * (item.boxes[:, 0] + item.boxes[:, 2])
        cy = 0.5 * (item.boxes[:, 1] + item.boxes[:, 3])
        n_ships += len(cx)
        for thr in levels:
            keep = np.zeros(len(windows), bool)
            for k, win in enumerate(windows):
                valid = np.zeros((TILE_SIZE, TILE_SIZE), bool)
                valid[: win.height, : win.width] = True
                t0 = time.perf_counter()
                keep[k] = bright_mask(batch[k], valid, [0], TILE_SIZE, min_u8=thr)[0]
                t_gate += time.perf_counter() - t0
            tiles_dark[thr] += int((~keep).sum())
            for y, x in zip(cy, cx, strict=True):
                cover = [k for k, w in enumerate(windows)
                         if w.row0 <= y < w.row1 and w.col0 <= x < w.col1]
                if not keep[cover].any():
                    ships_lost[thr] += 1
    return {"split": split, "images": len(items), "tiles": n_tiles, "ships": n_ships,
            "by_level": {str(t): {"tiles_skipped": tiles_dark[t], "ships_lost": ships_lost[t]}
                         for t in levels},
            "tile_max_percentiles": {str(p): float(np.percentile(tile_max, p))
                                     for p in (0, 1, 5, 50)},
            "gate_us_per_tile": 1e6 * t_gate / max(1, n_tiles * len(levels))}


def eval_opensarship(root: Path, gates: dict[str, int], ring_px: int = 8) -> dict:
    """Real Sentinel-1 ships: per VV gate, the GRD ship chips whose brightest VV pixel is below
    it. A 512² tile around the ship holds the chip and more, so this bounds the ships the gate
    could lose from above. VV: the only band of single-pol chips; of dual-pol chips the band
    with the higher median (co-pol sea is brighter than cross-pol).

    Also, per scene, the share of the chips' outer ``ring_px`` ring (mostly sea, some ship
    sidelobes and neighbours) at or above each gate: times the 262,144 pixels of a tile, how
    many pixels a sea tile there would have above the gate.
    """
    chip_max_db = []
    rings: dict[str, list[np.ndarray]] = defaultdict(list)
    for f in sorted(root.glob("scenes/*_GRDH_*/Patch_Cal/*.tif")):
        a = tifffile.imread(f).astype(np.float32)
        a = a.reshape(a.shape[0], a.shape[1], -1)
        vv = a[..., int(np.argmax(np.median(a.reshape(-1, a.shape[-1]), axis=0)))]
        chip_max_db.append(10.0 * np.log10(max(float(vv.max()), 1e-10)))
        ring = np.ones(vv.shape, bool)
        ring[ring_px:-ring_px, ring_px:-ring_px] = False
        rings[f.parents[1].name].append(vv[ring])
    db = np.array(chip_max_db)
    u8 = to_uint8(db.astype(np.float32), VV)
    sea = {}
    for scene, parts in rings.items():
        ring_u8 = to_uint8(10.0 * np.log10(np.concatenate(parts) + 1e-10), VV)
        sea[scene] = {"pixels": int(ring_u8.size),
                      "share_at_or_above": {name: float((ring_u8 >= thr).mean())
                                            for name, thr in gates.items()}}
    return {"ships": len(db),
            "chip_max_db_percentiles": {str(p): float(np.percentile(db, p))
                                        for p in (0, 1, 5, 10, 50)} if len(db) else {},
            "ships_below": {name: int((u8 < thr).sum()) for name, thr in gates.items()},
            "sea_ring": sea}


def markdown(result: dict) -> str:
    lines = []
    sc = result.get("scenes") or []
    if sc:
        tot = sum(s["tiles_total"] for s in sc)
        nod = sum(s["tiles_nodata"] for s in sc)
        land = sum(s["tiles_land"] for s in sc)
        land0 = sum(s["tiles_land_margin0"] for s in sc)
        la = sum(s["labels_all"] for s in sc)
        lv = sum(s["labels_vessel"] for s in sc)
        agg = defaultdict(lambda: defaultdict(int))
        for s in sc:
            for name, c in s["configs"].items():
                for k, v in c.items():
                    agg[name][k] += v
        base = agg["none"]
        lines += [
            f"Generated scenes: {len(sc)} ({result['size']}², seeds {result['seeds']}), "
            f"{tot} tiles, {la} labelled objects ({lv} vessels); the shipped scene model finds "
            f"{base['tp_all']} of them ({base['tp_vessel']} vessels) within "
            f"{result['match_px']:g} px with no pre-screen. Tiles without data: {nod}. Land "
            f"tiles with the {result['land_margin_px']:g} px margin: {land} "
            f"(without a margin: {land0}).",
            "",
            "| pre-screen | min_u8 | tiles skipped | labels uncovered (vessels) "
            "| TP (vessels) | TP lost (vessels) | detections |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, c in agg.items():
            skipped = tot - c["tiles_run"]
            thr = result["gates"].get(name.replace("land+gate ", ""), "")
            lines.append(
                f"| {name} | {thr} | {skipped} ({100 * skipped / tot:.1f} %) | "
                f"{c['labels_uncovered_all']} ({c['labels_uncovered_vessel']}) | "
                f"{c['tp_all']} ({c['tp_vessel']}) | {base['tp_all'] - c['tp_all']} "
                f"({base['tp_vessel'] - c['tp_vessel']}) | {c['detections']} |")
        spx = sum(s["sea_pixels"] for s in sc)
        share = ", ".join(
            f"{name}: {sum(s['sea_pixels_at_or_above'][name] for s in sc) / spx:.1e}"
            for name in result["gates"])
        lines += ["", f"Share of open-sea VV pixels (owiMask 0) at or above each gate: {share}."]
        us_sea = np.median([s["sea_mask_us_per_tile"] for s in sc])
        us_b = np.median([s["bright_mask_us_per_tile"] for s in sc])
        lines += ["", f"sea_mask {us_sea:.0f} µs per tile, bright_mask {us_b:.0f} µs per tile "
                  "(medians over scenes, measured under load)."]
    ss = result.get("ssdd")
    if ss:
        lines += ["", f"SSDD {ss['split']}: {ss['images']} images, {ss['tiles']} tiles, "
                  f"{ss['ships']} ships.", "",
                  "| grey level ≥ | tiles skipped | ships lost |", "|---:|---:|---:|"]
        for lvl, v in ss["by_level"].items():
            lines.append(f"| {lvl} | {v['tiles_skipped']} "
                         f"({100 * v['tiles_skipped'] / ss['tiles']:.1f} %) | "
                         f"{v['ships_lost']} ({100 * v['ships_lost'] / ss['ships']:.1f} %) |")
        pct = ", ".join(f"{p} %: {v:.0f}" for p, v in ss["tile_max_percentiles"].items())
        lines += ["", f"Brightest grey level per SSDD tile, percentiles {pct}; "
                  f"bright_mask {ss['gate_us_per_tile']:.0f} µs per tile."]
    osh = result.get("opensarship")
    if osh and osh["ships"]:
        pct = ", ".join(f"{p} %: {v:+.1f} dB" for p, v in osh["chip_max_db_percentiles"].items())
        lines += ["", f"OpenSARShip GRD chips (real Sentinel-1): {osh['ships']} ships; brightest "
                  f"VV pixel per chip, percentiles {pct}.", "",
                  "| gate | ships whose chip stays below it |", "|---|---:|"]
        for name, n in osh["ships_below"].items():
            lines.append(f"| {name} | {n} ({100 * n / osh['ships']:.1f} %) |")
        names = list(osh["ships_below"])
        lines += ["", "Chip border rings (8 px; sea, some sidelobes): share of VV pixels at or "
                  "above each gate, per GRD scene.", "",
                  "| scene | pixels | " + " | ".join(names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for scene, v in osh["sea_ring"].items():
            lines.append(f"| {scene[:33]}… | {v['pixels']} | " + " | ".join(
                f"{v['share_at_or_above'][n]:.1e}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="900-931", help="generated scenes; '' for none")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--root", type=Path, default=Path("out/prescreen_scenes"))
    ap.add_argument("--model", type=Path, help="scene model (default: the shipped one)")
    ap.add_argument("--gate-db", default="-10,-5,0,5",
                    help="VV gate thresholds in dB (comma-separated)")
    ap.add_argument("--match-px", type=float, default=20.0)
    ap.add_argument("--drop-scenes", action="store_true",
                    help="delete each generated scene's rasters after use (saves disk)")
    ap.add_argument("--ssdd-split", default="test", help="SSDD split; '' to skip SSDD")
    ap.add_argument("--ssdd-levels", default="64,128,192,224,240,248,255")
    ap.add_argument("--opensarship", type=Path,
                    help="OpenSARShip folder (scenes/*/Patch_Cal): real-ship check of the gate")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--resume", action="store_true",
                    help="reuse the scenes already in --json (same gates) instead of rerunning")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    gates = {f"{float(d):+g} dB": db_to_u8(float(d)) for d in args.gate_db.split(",")}
    result: dict = {"seeds": args.seeds, "size": args.size, "gates": gates,
                    "match_px": args.match_px, "land_margin_px": float(OVERLAP), "scenes": []}

    def save() -> None:
        if args.json:
            write_json(args.json, result)
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(markdown(result))

    done: dict[str, dict] = {}
    if args.resume and args.json and args.json.is_file():
        old = json.loads(args.json.read_text())
        if old.get("gates") == gates and old.get("match_px") == args.match_px:
            done = {s["scene_id"]: s for s in old.get("scenes", [])}
    if args.seeds:
        detector = make_detector("onnx", model=args.model)
        for seed in parse_seeds(args.seeds):
            sid = f"synth{seed:04d}{args.size}x{args.size}v"
            if sid in done:
                result["scenes"].append(done[sid])
                continue
            folder = args.root / sid
            if not (folder / "VH_dB.tif").is_file():
                synthesize_scene(args.root, height=args.size, width=args.size, seed=seed)
            labels = read_labels(args.root / "labels.csv")[sid]
            s = eval_scene(folder, labels, detector, gates, args.match_px)
            result["scenes"].append(s)
            log.info("%s: %d tiles, land %d, dark %s, TP %s", sid, s["tiles_total"],
                     s["tiles_land"], s["tiles_dark"],
                     {k: v["tp_all"] for k, v in s["configs"].items()})
            if args.drop_scenes:
                for f in folder.glob("*.tif"):
                    f.unlink()
            save()
    if args.ssdd_split:
        levels = [int(v) for v in args.ssdd_levels.split(",")]
        result["ssdd"] = eval_ssdd(args.ssdd_split, levels)
        save()
    if args.opensarship:
        result["opensarship"] = eval_opensarship(args.opensarship, gates)
        save()
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
