"""``cspine ct prepare`` and ``cspine ct eda``: thin wrappers over
:func:`cspine.preprocess.cache.prepare_cache` and :func:`cspine.ct.eda.run_eda`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cspine.registry.splits import RSNA_SPLITS, TEST, TRAIN


def prepare(
    data: Path = typer.Option(..., "--data", help="RSNA 2022 layout root (train.csv, train_images/, ...)."),
    cache: Path = typer.Option(..., "--cache", help="Cache folder (created; reused to resume)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Studies decoded in parallel (processes)."),
    split: str = typer.Option(TRAIN, "--split", help=f"{TRAIN} (with masks) or {TEST}."),
    bad_masks: str = typer.Option(
        "error", "--bad-masks",
        help="A mask with NaN voxels, labels outside 0..19, no vertebra or another grid than the CT: "
             "'error' fails its study; 'exclude' caches the study without the mask and lists it."),
    part: int | None = typer.Option(None, "--part", help="Prepare only part K (0-based) of --parts N of the "
                                                         "sorted studies; default under torchrun: RANK."),
    parts: int | None = typer.Option(None, "--parts", help="Number of parts (workers sharing --cache); "
                                                           "default under torchrun: WORLD_SIZE."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Use a --cache folder holding files that are "
                                                              "not a cspine cache, and replace a "
                                                              "summary.json cspine did not write."),
) -> None:
    """Decode each study once into a memory-mappable cache (int16 HU, geometry, slice map, mask).

    Resumable: finished studies are skipped. A bad study is listed at the end, never stops the run.
    Masks are checked before they are cached; each study's mask report (levels, voxels, mean HU per
    level) goes into CACHE/summary.json, and studies whose mask looks misaligned are printed.

    Sharded (--part/--parts, or torchrun): workers sharing one cache claim each study first, so none is
    prepared twice and a killed worker's study is redone; rerun without --part for the whole summary.

    Exit status 1 when any study failed (rerun to retry them).
    """
    from cspine.preprocess.cache import BAD_MASK_MODES, prepare_cache
    from cspine.shard import resolve_shard

    if split not in RSNA_SPLITS:
        raise typer.BadParameter(f"must be {' or '.join(map(repr, RSNA_SPLITS))}", param_hint="--split")
    if bad_masks not in BAD_MASK_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(BAD_MASK_MODES)}", param_hint="--bad-masks")
    shard = resolve_shard(part, parts)
    summary = prepare_cache(data, cache, workers=workers, split=split, bad_masks=bad_masks, shard=shard,
                            overwrite=overwrite)
    console = Console()
    where = "" if shard is None else f", {shard.label}"
    table = Table(title=f"cspine ct prepare ({split}{where}) -> {cache}")
    table.add_column("studies", justify="right")
    table.add_column("prepared", justify="right")
    table.add_column("already cached", justify="right")
    table.add_column("with mask", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row(str(summary.total), str(len(summary.done)), str(len(summary.skipped)), str(summary.masks),
                  f"[red]{len(summary.failed)}[/]" if summary.failed else "0", f"{summary.seconds:.1f}")
    console.print(table)
    if summary.busy:
        console.print(f"{len(summary.busy)} studies were being prepared by another worker: left to it",
                      highlight=False)
    # One line each, never wrapped inside a table cell: a user can search the output for a file name.
    for uid, reason in summary.masks_excluded.items():
        console.print(f"[yellow]mask left out[/] study {uid} (cached without it): {escape(reason)}",
                      highlight=False, soft_wrap=True)
    for line in summary.mask_warnings:
        console.print(f"[yellow]warning[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in summary.box_problems:
        console.print(f"[yellow]box[/] {escape(line)}", highlight=False, soft_wrap=True)
    if summary.mask_reports:
        console.print(f"mask reports of {len(summary.mask_reports)} studies: {Path(cache) / 'summary.json'}",
                      highlight=False, soft_wrap=True)
    if summary.failed:
        console.print(f"[red]failed studies[/] ({len(summary.failed)}; rerun to retry them):")
        for uid, reason in summary.failed.items():
            console.print(f"  {uid}: {escape(reason)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def eda(
    data: Path = typer.Option(..., "--data", help="RSNA 2022 layout root."),
    out: Path = typer.Option(..., "--out", help="Output folder for the PNG figures and eda.json."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files under cspine's output names "
                                                              "that cspine did not write."),
) -> None:
    """The CT paper's four EDA figures (prevalence, fractures per patient, correlation, slices) + eda.json."""
    from cspine.ct.eda import run_eda

    numbers = run_eda(data, out, overwrite=overwrite)
    console = Console()
    table = Table(title=f"EDA of {numbers['n_studies']} studies -> {out}")
    table.add_column("level")
    table.add_column("fractured", justify="right")
    table.add_column("prevalence", justify="right")
    for level, count in numbers["fracture_counts"].items():
        prev = numbers["prevalence"][level]
        table.add_row(level, str(count), "-" if prev is None else f"{100 * prev:.1f}%")
    console.print(table)
    sps = numbers.get("slices_per_study") or {}
    if sps.get("n_studies"):
        console.print(f"slices per study: min {sps['min']}, median {sps['median']:g}, max {sps['max']}")
    console.print("figures: " + ", ".join(str(Path(out) / f) for f in numbers["figures"]))
