"""``solo-fgsynth zoo``: list, describe, download and publish pretrained backbones.

Exporting needs torch; it is imported by the export and cards commands only, so that listing,
describing and downloading start at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from solo_fgsynth.zoo.card import format_size, method_label, render_card
from solo_fgsynth.zoo.download import CACHE_ENV, DEFAULT_RETRIES, OFFLINE_ENV, fetch_entry
from solo_fgsynth.zoo.manifest import DEFAULT_LICENSE, MANIFEST_ENV, Manifest, validate_metrics

_COLUMNS = ("NAME", "METHOD", "BACKBONE", "DATASET", "CROP", "LINEAR@1", "KNN@1", "mAP", "SIZE")


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cmd_list(args: argparse.Namespace) -> int:
    zoo = Manifest.load(args.manifest)
    if not zoo.entries:
        print(
            f"No pretrained weights are published yet (manifest: {zoo.source}).\n"
            "Publish a solo-learn checkpoint with: "
            "solo-fgsynth zoo export CKPT --name NAME --metrics-from results.json"
        )
        return 0
    rows = [
        (
            entry.name,
            method_label(entry),
            entry.backbone.arch + (" (cifar stem)" if entry.backbone.cifar_stem else ""),
            entry.dataset,
            str(entry.crop_size),
            _metric(entry.metrics.get("linear_top1")),
            _metric(entry.metrics.get("knn_top1")),
            _metric(entry.metrics.get("retrieval_map")),
            format_size(entry.size_bytes),
        )
        for entry in zoo.entries
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    for row in [_COLUMNS, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"\n{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}; metrics in percent.")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    print(render_card(Manifest.load(args.manifest).get(args.name)), end="")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    zoo = Manifest.load(args.manifest)
    path = fetch_entry(
        zoo,
        zoo.get(args.name),
        cache=args.cache_dir,
        offline=True if args.offline else None,
        progress=False if args.no_progress else None,
        retries=args.retries,
    )
    print(path)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from solo_fgsynth.zoo.export import export_checkpoint, parse_metric, read_metrics_file

    metrics = read_metrics_file(args.metrics_from) if args.metrics_from else {}
    metrics.update(parse_metric(text) for text in args.metric)
    result = export_checkpoint(
        args.ckpt,
        name=args.name,
        args_path=args.args,
        metrics=validate_metrics(metrics, "--metric"),
        urls=args.url,
        license=args.license,
        base_method=args.base_method,
        notes=args.notes,
        manifest=args.manifest,
        weights_dir=args.weights_dir,
        cards_dir=args.cards_dir,
        replace=args.replace,
    )
    entry = result.entry
    print(f"weights:  {result.weights_path} ({entry.size_bytes} bytes, sha256 {entry.sha256})")
    print(f"card:     {result.card_path}")
    print(f"manifest: {result.manifest_path} (entry {entry.name!r})")
    if args.url:
        print("Upload the weights file so that it is served at:")
        for url in args.url:
            print(f"  {url}")
    return 0


def _cmd_cards(args: argparse.Namespace) -> int:
    from solo_fgsynth.zoo.export import write_cards

    paths = write_cards(args.manifest, args.cards_dir)
    for path in paths:
        print(path)
    if not paths:
        print("The manifest has no entries; no cards to write.")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--manifest",
        metavar="PATH",
        help=f"manifest file or URL (default: ${MANIFEST_ENV}, else the packaged one)",
    )
    parser = argparse.ArgumentParser(
        prog="solo-fgsynth zoo",
        description="Pretrained backbones: list, describe, download (sha256-verified) and publish.",
        epilog=f"Environment: {CACHE_ENV}=DIR sets the cache, {OFFLINE_ENV}=1 uses no network "
        "(the cache and local files only), "
        f"{MANIFEST_ENV}=FILE_OR_URL another manifest.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("list", parents=[common], help="table of published entries and their metrics")

    info = sub.add_parser("info", parents=[common], help="print an entry's model card")
    info.add_argument("name")

    download = sub.add_parser(
        "download", parents=[common], help="fetch an entry into the cache and print its path"
    )
    download.add_argument("name")
    download.add_argument("--cache-dir", metavar="DIR", help=f"cache (default: ${CACHE_ENV})")
    download.add_argument(
        "--offline", action="store_true", help="no network: the cache and local files only"
    )
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    download.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="extra attempts per source"
    )

    export = sub.add_parser(
        "export",
        parents=[common],
        help="publish a solo-learn checkpoint: backbone safetensors, manifest entry, card",
    )
    export.add_argument("ckpt", help="Lightning .ckpt written by solo-learn's Checkpointer")
    export.add_argument("--name", required=True, help="entry name, e.g. fgsynth-byol-resnet18-cub")
    export.add_argument("--args", metavar="JSON", help="run config (default: CKPT dir/args.json)")
    export.add_argument("--metrics-from", metavar="JSON", help="results file with metric keys")
    export.add_argument(
        "--metric", action="append", default=[], metavar="KEY=VALUE", help="a metric, in percent"
    )
    export.add_argument(
        "--url", action="append", default=[], metavar="URL", help="download source, in order"
    )
    export.add_argument("--license", default=DEFAULT_LICENSE, help="license of the weights")
    export.add_argument("--base-method", help="method that fgsynth wraps (default: from args.json)")
    export.add_argument("--notes", default="", help="free text for the model card")
    export.add_argument("--weights-dir", metavar="DIR", help="where the safetensors file goes")
    export.add_argument("--cards-dir", metavar="DIR", help="where the model card goes")
    export.add_argument("--replace", action="store_true", help="overwrite an existing entry")

    cards = sub.add_parser(
        "cards", parents=[common], help="rewrite every model card from the manifest"
    )
    cards.add_argument("--cards-dir", metavar="DIR", help="where the model cards go")
    return parser


_COMMANDS = {
    "list": _cmd_list,
    "info": _cmd_info,
    "download": _cmd_download,
    "export": _cmd_export,
    "cards": _cmd_cards,
}


def main(argv: Sequence[str]) -> int:
    """Run one zoo subcommand; its errors are reported by ``solo-fgsynth``'s entry point."""
    args = _build_parser().parse_args(list(argv))
    return _COMMANDS[args.command](args)
