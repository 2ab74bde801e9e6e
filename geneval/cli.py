"""The ``geneval`` command line (DESIGN §3).

Exit codes: 0 all metrics computed and all gates passed; 1 a gate failed; 2 bad usage or bad
input (one line naming the culprit, a traceback only with ``--debug``); 3 a metric or model
plugin raised (the other metrics are still reported).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
import torch

from geneval import __version__
from geneval.device import resolve_device
from geneval.errors import InputError
from geneval.gates import (
    check_gate_metrics,
    evaluate_gates,
    gates_from_file,
    gates_from_pyproject,
    parse_gate,
)
from geneval.io import atomic_path, check_writable, write_atomic
from geneval.options import declared_options, parse_options
from geneval.plugins import get_registry
from geneval.progress import set_quiet
from geneval.report import to_json, to_junit, to_markdown, to_table
from geneval.runner import DEFAULT_EXTRACTOR, Evaluation, RunConfig, extract, resolve_source
from geneval.sources import ModelSource
from geneval.stats import FeatureStatistics, make_meta, save_stats

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_PLUGIN = 0, 1, 2, 3


def _info(message: str, quiet: bool) -> None:
    if not quiet:
        click.echo(message, err=True)


class _PluginCommands(click.Group):
    """The built-in commands plus those registered by plugins (looked up lazily)."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        return {name: item.obj for name, item in get_registry().items("command").items()}

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        if not ctx.resilient_parsing:
            names |= set(self._plugin_commands())
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None:
            command = self._plugin_commands().get(name)
        return command


@click.group(cls=_PluginCommands)
@click.version_option(__version__, prog_name="geneval")
def cli() -> None:
    """Evaluate generative models: FID, KID, IS, likelihoods and more, through plugins."""


_device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
)
_quiet_option = click.option("--quiet", is_flag=True, help="No progress bars or notes.")
_debug_option = click.option("--debug", is_flag=True, help="Show tracebacks.")
_force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")


# -- run ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--model", help="Model plugin to sample from (its bundled checkpoint by default).")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint for --model.")
@click.option(
    "--num-samples", default=1000, show_default=True, help="Samples to draw from --model."
)
@click.option("--sampler", help="Sampler of --model (default: the checkpoint's).")
@click.option("--steps", type=int, help="Sampler steps of --model (default: the checkpoint's).")
@click.option("--samples", help="Folder of images or .npy/.npz array to evaluate.")
@click.option("--reference", help="DATASET[:SPLIT], folder, array or statistics .npz.")
@click.option("--metrics", default="fid", show_default=True, help="Comma-separated metric names.")
@click.option("--extractor", help="Feature extractor (default: the reference dataset's).")
@click.option(
    "--inception-weights", type=click.Path(path_type=Path), help="Inception weights file."
)
@click.option("--resize", help="Resize convention of the extractor: tf1, pytorch-fid or clean.")
@click.option("--opt", "opts", multiple=True, metavar="METRIC.KEY=VALUE", help="Metric option.")
@_device_option
@click.option(
    "--batch-size",
    type=int,
    help="Images per extractor call (default 64) and per model call (default 500).",
)
@click.option(
    "--workers", type=int, help="Image-decoding workers for folders (default: by folder size)."
)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown report.")
@click.option(
    "--junit", type=click.Path(path_type=Path), help="Write JUnit XML (one case per gate)."
)
@_force_option
@click.option("--fail-if", "fail_if", multiple=True, metavar="EXPR", help="Gate, e.g. 'fid>30'.")
@click.option("--gates", "gates_file", type=click.Path(path_type=Path), help="TOML file of gates.")
@_quiet_option
@_debug_option
def run(
    model: str | None,
    checkpoint: Path | None,
    num_samples: int,
    sampler: str | None,
    steps: int | None,
    samples: str | None,
    reference: str | None,
    metrics: str,
    extractor: str | None,
    inception_weights: Path | None,
    resize: str | None,
    opts: Sequence[str],
    device: str,
    batch_size: int | None,
    workers: int | None,
    seed: int,
    json_path: Path | None,
    markdown: Path | None,
    junit: Path | None,
    force: bool,
    fail_if: Sequence[str],
    gates_file: Path | None,
    quiet: bool,
    debug: bool,
) -> int:
    """Evaluate samples (a folder, an array or a model) against a reference."""
    set_quiet(quiet)
    config = RunConfig(
        metrics=[m for m in metrics.split(",") if m.strip()],
        model=model,
        checkpoint=checkpoint,
        num_samples=num_samples,
        samples=samples,
        reference=reference,
        extractor=extractor,
        inception_weights=inception_weights,
        resize=resize,
        options=list(opts),
        device=device,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        sampler=sampler,
        steps=steps,
    )
    evaluation = Evaluation(config, debug=debug)
    requested = list(evaluation.metrics)

    gates = [parse_gate(expr) for expr in fail_if]
    if gates_file is not None:
        gates += gates_from_file(gates_file)
    check_gate_metrics(gates, requested)
    ambient = gates_from_pyproject(".")
    gates += [g for g in ambient if g.metric in requested]

    outputs = {
        "--json": json_path,
        "--markdown": markdown,
        "--junit": junit,
    }
    for flag, path in outputs.items():
        if path is not None:
            check_writable(path, force=force, what=f"{flag} file")

    report = evaluation.execute()
    verdicts = evaluate_gates(gates, report["metrics"])
    report["gates"] = verdicts
    gate_failed = any(v["failed"] for v in verdicts)
    report["passed"] = not gate_failed and not report["errors"]

    if json_path is not None:
        write_atomic(json_path, to_json(report), force=force, what="--json file")
    if markdown is not None:
        write_atomic(markdown, to_markdown(report), force=force, what="--markdown file")
    if junit is not None:
        write_atomic(junit, to_junit(report), force=force, what="--junit file")
    click.echo(to_table(report), nl=False)
    for name, message in report["errors"].items():
        click.echo(f"geneval: error: metric {name} raised {message}", err=True)
    if report["errors"]:
        return EXIT_PLUGIN
    return EXIT_GATE if gate_failed else EXIT_OK


# -- stats -------------------------------------------------------------------------------------


@cli.command()
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="OUT.npz")
@click.option("--extractor", help="Feature extractor (default: the dataset's, else Inception).")
@click.option(
    "--inception-weights", type=click.Path(path_type=Path), help="Inception weights file."
)
@click.option("--resize", help="Resize convention of the extractor: tf1, pytorch-fid or clean.")
@click.option(
    "--features/--no-features",
    default=False,
    show_default=True,
    help="Also store per-sample features (needed by KID).",
)
@_device_option
@click.option("--batch-size", default=64, show_default=True)
@click.option(
    "--workers", type=int, help="Image-decoding workers for folders (default: by folder size)."
)
@_force_option
@_quiet_option
@_debug_option
def stats(
    source: str,
    output: Path,
    extractor: str | None,
    inception_weights: Path | None,
    resize: str | None,
    features: bool,
    device: str,
    batch_size: int,
    workers: int | None,
    force: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """Write feature statistics (mu, sigma, n; optionally features) of SOURCE to an .npz."""
    set_quiet(quiet)
    if output.suffix != ".npz":
        raise InputError(f"-o {output}: statistics files end in .npz")
    check_writable(output, force=force, what="statistics file")
    registry = get_registry()
    src, dataset = resolve_source(source, registry)
    name = extractor or (dataset.default_extractor if dataset is not None else DEFAULT_EXTRACTOR)
    family = registry.extractor(name)
    if resize is not None and resize not in family.resize_options:
        allowed = ", ".join(family.resize_options) or "none (fixed preprocessing)"
        raise InputError(f"--resize {resize}: extractor {name} accepts {allowed}")
    dev = resolve_device(device)
    loaded = family.load(device=dev, weights=inception_weights, resize=resize)
    outputs, _ = extract(
        src, loaded, [family.feature_output], batch_size=batch_size, device=dev, workers=workers
    )
    feats = outputs[family.feature_output]
    moments = FeatureStatistics(feats.shape[1], device=dev).update(feats.to(dev))
    meta = make_meta(
        extractor=name,
        output=family.feature_output,
        weights_sha256=loaded.weights_sha256,
        convention=loaded.convention,
    )
    meta["source"] = src.description
    save_stats(output, moments, meta, features=feats if features else None, force=force)
    _info(f"wrote {output}: {moments.n} images, {moments.dim}-d {name} features", quiet)
    return EXIT_OK


# -- plugins -----------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> int:
    """List installed plugins: kind, name, distribution and version."""
    registry = get_registry()
    rows = registry.listing()
    failed = [
        {
            "entry_point": p.entry_point,
            "distribution": p.distribution,
            "version": p.version,
            "error": message,
        }
        for p, message in registry.failed
    ]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failed": failed}, indent=2))
        return EXIT_OK
    widths = [max([len(h)] + [len(r[h]) for r in rows]) for h in ("kind", "name", "distribution")]
    header = ("kind", "name", "distribution", "version")
    click.echo("  ".join(f"{h:<{w}}" for h, w in zip(header, widths + [0], strict=True)).rstrip())
    for r in rows:
        click.echo(
            "  ".join(f"{r[h]:<{w}}" for h, w in zip(header, widths + [0], strict=True)).rstrip()
        )
    for f in failed:
        click.echo(f"(failed to load: {f['entry_point']} from {f['distribution']}: {f['error']})")
    return EXIT_OK


# -- train -------------------------------------------------------------------------------------


@cli.command()
@click.option("--model", required=True, help="Model plugin to train.")
@click.option(
    "--dataset",
    required=True,
    help="What to train on: DATASET[:SPLIT] (default split: the dataset's), a folder of images "
    "or an .npy/.npz array. Image size and channels come from the data.",
)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Checkpoint.")
@click.option("--steps", type=int, help="Training steps in total (default: the model's).")
@_device_option
@click.option("--seed", default=0, show_default=True, help="Seed (a resumed run keeps its own).")
@click.option("--resume", is_flag=True, help="Continue the run saved at -o up to --steps.")
@click.option(
    "--checkpoint-every", type=int, metavar="N", help="Also write the checkpoint every N steps."
)
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE", help="Training option.")
@_force_option
@_quiet_option
@_debug_option
def train(
    model: str,
    dataset: str,
    output: Path,
    steps: int | None,
    device: str,
    seed: int,
    resume: bool,
    checkpoint_every: int | None,
    opts: Sequence[str],
    force: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """Train a model plugin on a dataset, an image folder or an array, and write a checkpoint.

    Options are checked before any work. A new run gets every option (defaults filled in);
    with --resume the family gets only the options given, which override the recorded ones.
    """
    from geneval.options import parse_assignments
    from geneval.training import images_from_source

    set_quiet(quiet)
    registry = get_registry()
    family = registry.model(model)
    declared = declared_options(family, "train_options")
    assignments = list(opts)
    if checkpoint_every is not None:
        if "checkpoint_every" not in declared:
            raise InputError(f"--checkpoint-every: model {model} has no intermediate checkpoints")
        assignments.append(f"checkpoint_every={checkpoint_every}")
    options = parse_options(assignments, declared, owner=f"model {model}")
    if resume:
        options = {key: options[key] for key in parse_assignments(assignments)}
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be positive, got {steps}")
    if resume and not output.is_file():
        raise InputError(f"--resume: checkpoint {output} does not exist")
    if not resume:
        check_writable(output, force=force, what="checkpoint")
    source, _ = resolve_source(dataset, registry)
    data = images_from_source(source)
    path = family.train(
        data,
        output=output,
        steps=steps,
        device=resolve_device(device),
        seed=seed,
        resume=resume,
        force=force or resume,
        options=options,
    )
    _info(f"wrote {path}", quiet)
    return EXIT_OK


# -- sample ------------------------------------------------------------------------------------


def _write_image_folder(folder: Path, images: np.ndarray, *, force: bool) -> None:
    """Write uint8 NHWC images as numbered PNG files into ``folder`` (atomically per file)."""
    from PIL import Image

    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise InputError(f"-o {folder} is a non-empty folder (use --force to write into it)")
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(images) - 1)))
    for i, image in enumerate(images):
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        with atomic_path(folder / f"{i:0{width}d}.png", force=True, what="image") as tmp:
            pil.save(tmp, format="PNG")


@cli.command()
@click.option("--model", required=True, help="Model plugin to sample from.")
@click.option(
    "--checkpoint", type=click.Path(path_type=Path), help="Checkpoint (default: bundled)."
)
@click.option("-n", "--num-samples", required=True, type=int, help="Number of samples.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="OUT.npz or a folder for PNG files.",
)
@click.option("--sampler", help="Sampler (default: the checkpoint's).")
@click.option("--steps", type=int, help="Sampler steps (default: the checkpoint's).")
@click.option("--seed", default=0, show_default=True)
@click.option("--batch-size", type=int, help="Samples per model call (default 500).")
@_device_option
@_force_option
@_quiet_option
@_debug_option
def sample(
    model: str,
    checkpoint: Path | None,
    num_samples: int,
    output: Path,
    sampler: str | None,
    steps: int | None,
    seed: int,
    batch_size: int | None,
    device: str,
    force: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """Draw samples from a model into an .npz (images uint8 NHWC) or a folder of PNGs."""
    set_quiet(quiet)
    if num_samples < 1:
        raise InputError(f"-n must be positive, got {num_samples}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    to_npz = output.suffix == ".npz"
    if to_npz:
        check_writable(output, force=force, what="samples file")
    elif output.suffix:
        raise InputError(f"-o {output}: give an .npz file or a folder name without a suffix")
    family = get_registry().model(model)
    if sampler is not None and sampler not in family.samplers:
        raise InputError(f"--sampler {sampler}: model {model} offers {', '.join(family.samplers)}")
    dev = resolve_device(device)
    loaded = family.load(checkpoint, device=dev)
    source = ModelSource(
        f"model:{model}",
        loaded,
        num_samples,
        seed=seed,
        sampler=sampler,
        steps=steps,
        batch_size=batch_size,
    )
    batches = [b.cpu() for b in source.batches(0, dev, 0)]
    images = torch.cat(batches)
    array = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if to_npz:

        def _save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, images=array)

        write_atomic(output, _save, force=force, what="samples file")
    else:
        _write_image_folder(output, array, force=force)
    _info(f"wrote {len(array)} samples to {output}", quiet)
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: map errors onto exit codes with one-line messages."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="geneval", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("geneval: aborted", err=True)
        code = 130
    except click.ClickException as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"geneval: error: {exc.format_message()}".splitlines()[0], err=True)
        code = EXIT_USAGE
    except InputError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"geneval: error: {exc}".splitlines()[0], err=True)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        click.echo("geneval: interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - a plugin raised: one line, traceback with --debug
        if debug:
            traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        click.echo(f"geneval: error: a plugin raised {message} (use --debug for details)", err=True)
        code = EXIT_PLUGIN
    sys.exit(code if isinstance(code, int) else EXIT_OK)
