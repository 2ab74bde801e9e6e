"""The ``geneval`` command line (docs/contracts.md §3).

Exit codes: 0 all metrics computed and all gates passed; 1 a gate failed; 2 bad usage or bad
input (one line naming the culprit, a traceback only with ``--debug``); 3 a metric or model
plugin raised (the other metrics are still reported).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geneval import __version__
from geneval.api import CommandOption
from geneval.errors import InputError, RankError, WarningLog, captured_warnings, warn
from geneval.interrupts import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    end_with_parent,
    parent_from_environment,
    sigterm_raises,
)
from geneval.io import (
    STDOUT,
    Output,
    check_image_folder,
    check_outputs,
    check_writable,
    write_atomic,
    write_image_folder,
    write_outputs,
)
from geneval.listing import plugin_detail, verbose_lines
from geneval.options import declared_options, parse_options
from geneval.plugins import get_registry
from geneval.progress import set_quiet
from geneval.report.compare import DEFAULT_RTOL, compare_reports, load_report, to_text
from geneval.report.formats import to_table
from geneval.report.gates import (
    apply_gates,
    check_gate_metrics,
    gates_from_file,
    gates_from_pyproject,
    parse_gate,
)
from geneval.run.config import DEFAULTS, LAYOUTS, PRECISIONS, RunConfig, run_config
from geneval.text import printable, quote, visible

if TYPE_CHECKING:  # the commands import torch and the pipeline when they run, not --help
    import torch

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_PLUGIN = 0, 1, 2, 3

#: The arguments of the current invocation (``run --nproc`` hands them to its ranks).
_invocation: list[str] = []
#: Set when this process only launched the ranks of ``run --nproc``: rank 0 prints the
#: warnings, this process none.
_launched: list[bool] = []


def _rank() -> int:
    """This process's rank in a sharded run (0 when not sharded): only rank 0 prints."""
    try:
        return int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else 0
    except ValueError:
        return 0


def _join_ranks(device: str) -> torch.device:
    """The device of this rank, joining the process group the environment describes (torchrun,
    ``--nproc``); other ranks than 0 stay quiet."""
    from geneval.device import resolve_device
    from geneval.distributed import init_from_env, rank_device

    try:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise InputError(f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r} is not an integer") from None
    dev = resolve_device(rank_device(device, local_rank))
    ctx = init_from_env(dev)
    if not ctx.is_main:
        set_quiet(True)
    return dev


def _without_nproc(args: Sequence[str]) -> list[str]:
    """``args`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _info(message: str, quiet: bool) -> None:
    if not quiet:
        click.echo(visible(message), err=True)


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
            return self._plugin_commands().get(name)
        extra = [
            item.obj
            for item in get_registry().items("command_option").values()
            if name in item.obj.commands
        ]
        return _with_plugin_options(command, extra) if extra else command


def _with_plugin_options(command: click.Command, extra: list[CommandOption]) -> click.Command:
    """``command`` with options that plugins add to it (e.g. a deprecated spelling), each
    forwarding its value to one of the command's own parameters."""
    extended = copy.copy(command)
    extended.params = [*command.params, *(o.option for o in extra)]
    callback = command.callback

    def forwarding(**kwargs: Any) -> Any:
        for o in extra:
            value = kwargs.pop(o.option.name)
            if value is None or value == ():
                continue
            if kwargs.get(o.forward_to) not in (None, ()):
                raise InputError(f"{o.option.opts[0]} and the option it stands for are both given")
            if o.note:
                warn(o.note)
            kwargs[o.forward_to] = value
        return callback(**kwargs)

    extended.callback = forwarding
    return extended


class _ExtractorChoices(click.Option):
    """``--resize``: the help lists each installed extractor's conventions."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        choices = [
            f"{name}: {', '.join(item.obj.resize_options)}"
            for name, item in sorted(get_registry().items("extractor").items())
            if item.obj.resize_options
        ]
        return record[0], record[1] + (f" ({'; '.join(choices)})" if choices else "")


@click.group(cls=_PluginCommands, invoke_without_command=True)
@click.version_option(__version__, prog_name="geneval")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Evaluate generative models: FID, KID, IS, likelihoods and more, through plugins."""
    if ctx.invoked_subcommand is None:  # a bare `geneval` shows what it can do
        click.echo(ctx.get_help())


_device_option = click.option(
    "--device", default=DEFAULTS["device"], show_default=True, help="auto, cpu, cuda or cuda:N."
)
_quiet_option = click.option("--quiet", is_flag=True, help="No progress bars or notes.")
_debug_option = click.option("--debug", is_flag=True, help="Show tracebacks.")
_force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")

_extractor_option = click.option(
    "--extractor",
    help="Feature extractor (default: the reference dataset's, else the installed default).",
)
_extractor_weights_option = click.option(
    "--extractor-weights",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Weights file of extractor NAME (repeatable), or PATH when the run uses one "
    "extractor (default: its published weights; see `geneval weights`).",
)
_resize_option = click.option(
    "--resize", cls=_ExtractorChoices, help="Resize convention of the extractor."
)
_layout_option = click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default=DEFAULTS["layout"],
    show_default=True,
    help="Axes of image arrays (.npy/.npz): auto reads the one layout with 1 or 3 channels "
    "and refuses a shape that fits both, such as (N, 3, 3, 3).",
)

#: Seeds are 63-bit: torch generators take any value in [0, 2^63).
SEED_RANGE = click.IntRange(0, 2**63 - 1)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
_seed_option = click.option(
    "--seed",
    default=DEFAULTS["seed"],
    show_default=True,
    type=SEED_RANGE,
    help="Random seed, in [0, 2^63).",
)
_workers_option = click.option(
    "--workers",
    type=NON_NEGATIVE,
    help="Image-decoding workers for folders (default: by folder size).",
)
_no_cache_option = click.option(
    "--no-cache",
    is_flag=True,
    help="Do not read or write the feature cache ($GENEVAL_CACHE/features).",
)


# -- run ---------------------------------------------------------------------------------------


_CONDITION_OPTIONS = (
    click.option(
        "--labels",
        type=click.Path(path_type=Path),
        help="Class labels of a class-conditional --model: .npy or one integer per line "
        "(default: balanced over its classes, seeded).",
    ),
    click.option(
        "--prompts",
        type=click.Path(path_type=Path),
        help="Text prompts of a text-to-image --model: one per line, or .jsonl with 'prompt'.",
    ),
)


def _condition_options(function: Any) -> Any:
    for option in reversed(_CONDITION_OPTIONS):
        function = option(function)
    return function


@cli.command()
@click.option(
    "--model",
    help="Model to sample from: a model family (its bundled checkpoint by default), "
    "FAMILY:CHECKPOINT, or your generator as module.path:attribute.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint of the --model family: a file, a folder or a hub id.",
)
@click.option(
    "--num-samples",
    default=DEFAULTS["num_samples"],
    show_default=True,
    type=POSITIVE,
    help="Samples to draw from --model.",
)
@click.option("--sampler", help="Sampler of --model (default: the checkpoint's).")
@click.option(
    "--steps", type=POSITIVE, help="Sampler steps of --model (default: the checkpoint's)."
)
@_condition_options
@click.option("--samples", help="Folder of images or .npy/.npz array to evaluate.")
@click.option("--reference", help="DATASET[:SPLIT], folder, array or statistics .npz.")
@click.option(
    "--metrics",
    default=DEFAULTS["metrics"],
    show_default=True,
    help="Comma-separated metric names.",
)
@_extractor_option
@_extractor_weights_option
@_resize_option
@_layout_option
@click.option(
    "--opt",
    "opts",
    multiple=True,
    metavar="METRIC.KEY=VALUE",
    help="Metric option; model.KEY=VALUE is a sample option of --model.",
)
@_device_option
@click.option(
    "--batch-size",
    type=POSITIVE,
    help=f"Images per extractor call (default {DEFAULTS['batch_size']}); also samples per "
    "model call unless --sample-batch-size is given.",
)
@click.option(
    "--sample-batch-size",
    type=POSITIVE,
    help=f"Samples per call of --model (default: --batch-size if given, else "
    f"{DEFAULTS['sample_batch_size']}).",
)
@_workers_option
@_seed_option
@click.option(
    "--nproc",
    type=POSITIVE,
    help="Shard the run over N processes on this machine (under torchrun: one per rank); "
    "at most the CPU cores this process may use.",
)
@click.option(
    "--oversubscribe",
    is_flag=True,
    help="Allow --nproc to start more ranks than there are CPU cores.",
)
@_no_cache_option
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=DEFAULTS["precision"],
    show_default=True,
    help="Extraction precision; bf16/tf32 report their deviation from fp32 on this run's data.",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch.compile the extractors (kept only where they match eager fp32 within 1e-5).",
)
@click.option("--json", "json_path", help="Write the JSON report to PATH (- for stdout).")
@click.option(
    "--markdown",
    help="Write a Markdown report to PATH (- for stdout); a file gets its grid of samples "
    "and reference images beside it as PATH-grid.png.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    help="Write a self-contained HTML report: metrics, gates, sample and reference grids, "
    "nearest reference images of samples, provenance.",
)
@click.option(
    "--grid",
    default=64,
    show_default=True,
    type=NON_NEGATIVE,
    help="Images of each source shown in the --html and --markdown grids.",
)
@click.option(
    "--baseline",
    is_flag=True,
    help="Also score the reference dataset's held-out split (test, else val) against the "
    "reference, beside the samples, both at the same n.",
)
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
    labels: Path | None,
    prompts: Path | None,
    samples: str | None,
    reference: str | None,
    metrics: str,
    extractor: str | None,
    extractor_weights: Sequence[str | Path],
    resize: str | None,
    layout: str,
    opts: Sequence[str],
    device: str,
    batch_size: int | None,
    sample_batch_size: int | None,
    workers: int | None,
    seed: int,
    nproc: int | None,
    oversubscribe: bool,
    no_cache: bool,
    precision: str,
    compile_: bool,
    json_path: str | None,
    markdown: str | None,
    html_path: Path | None,
    grid: int,
    baseline: bool,
    junit: Path | None,
    force: bool,
    fail_if: Sequence[str],
    gates_file: Path | None,
    quiet: bool,
    debug: bool,
) -> int:
    """Evaluate samples (a folder, an array or a model) against a reference."""
    from geneval.distributed import under_torchrun
    from geneval.report.files import planned_reports

    set_quiet(quiet)
    pictures = html_path is not None or (markdown is not None and markdown != STDOUT)
    if nproc is not None:
        if under_torchrun():
            raise InputError("--nproc cannot be used under torchrun (it starts the ranks itself)")
        if nproc > 1:
            from geneval.launch import check_nproc, run_ranks

            check_nproc(nproc, oversubscribe=oversubscribe)
            planned = planned_reports(
                {"json": json_path, "markdown": markdown, "junit": junit, "html": html_path}
            )
            check_outputs([out for out, _ in planned], force=force)  # before starting ranks
            _launched.append(True)
            return run_ranks(_without_nproc(_invocation), nproc)
    device = _join_ranks(device)  # resolved here, once: the run takes the torch.device
    config = run_config(
        metrics,
        model=model,
        checkpoint=checkpoint,
        num_samples=num_samples,
        samples=samples,
        reference=reference,
        extractor=extractor,
        extractor_weights=extractor_weights,
        resize=resize,
        layout=layout,
        options=list(opts),
        device=device,
        batch_size=batch_size,
        sample_batch_size=sample_batch_size,
        workers=workers,
        seed=seed,
        sampler=sampler,
        steps=steps,
        labels=labels,
        prompts=prompts,
        grid=grid if pictures else 0,
        neighbours=NEIGHBOUR_ROWS if html_path is not None else 0,
        baseline=baseline,
        cache=not no_cache,
        precision=precision,
        compile=compile_,
    )
    reports = {"json": json_path, "markdown": markdown, "junit": junit, "html": html_path}
    with captured_warnings() as caught:
        return _run(config, fail_if, gates_file, reports, force, debug, caught)


#: Samples shown with their nearest reference images in the HTML report.
NEIGHBOUR_ROWS = 8


def _run(
    config: RunConfig,
    fail_if: Sequence[str],
    gates_file: Path | None,
    reports: dict[str, Any],
    force: bool,
    debug: bool,
    caught: WarningLog,
) -> int:
    from geneval.report.files import planned_reports
    from geneval.runner import Evaluation

    # Everything that can be checked before the work is: metrics, options, gates, outputs.
    evaluation = Evaluation(config, debug=debug)
    gates = [parse_gate(expr) for expr in fail_if]
    if gates_file is not None:
        gates += gates_from_file(gates_file)
    check_gate_metrics(gates, evaluation.metrics)
    ambient = gates_from_pyproject(".")
    gates += [g for g in ambient if g.metric in evaluation.metrics]
    check_gate_metrics(gates, evaluation.metrics)
    outputs = planned_reports(reports)
    check_outputs([out for out, _ in outputs], force=force)

    report = evaluation.execute()
    gate_failed = apply_gates(report, gates)
    report["warnings"] = caught.drain()
    if _rank() != 0:  # ranks of a sharded run compute the same report; rank 0 writes it
        if report["errors"]:
            return EXIT_PLUGIN
        return EXIT_GATE if gate_failed else EXIT_OK

    # Render every output before writing any, then write them all or none.
    rendered = [(out, render(report, evaluation.visuals)) for out, render in outputs]
    rendered = [(out, content) for out, content in rendered if content is not None]
    write_outputs(rendered, force=force, stdout=lambda text: click.echo(text, nl=False))
    if not any(out.to_stdout for out, _ in outputs):
        click.echo(to_table(report), nl=False)
    for name, message in report["errors"].items():
        _echo_line(f"geneval: error: metric {name} raised {message}")
    if report["errors"]:
        return EXIT_PLUGIN
    return EXIT_GATE if gate_failed else EXIT_OK


# -- stats -------------------------------------------------------------------------------------


@cli.command()
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="OUT.npz")
@_extractor_option
@_extractor_weights_option
@_resize_option
@_layout_option
@click.option(
    "--features/--no-features",
    default=False,
    show_default=True,
    help="Also store per-sample features (needed by KID, precision/recall ...).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["geneval", "adm"]),
    default="geneval",
    show_default=True,
    help="geneval: mu, sigma, n, meta; adm: the ADM evaluator's reference batch "
    "(arr_0 images, mu, sigma, mu_s, sigma_s), readable by guided-diffusion's evaluator.py.",
)
@_device_option
@click.option("--batch-size", default=DEFAULTS["batch_size"], show_default=True, type=POSITIVE)
@_workers_option
@_no_cache_option
@_force_option
@_quiet_option
@_debug_option
def stats(
    source: str,
    output: Path,
    extractor: str | None,
    extractor_weights: Sequence[str | Path],
    resize: str | None,
    layout: str,
    features: bool,
    file_format: str,
    device: str,
    batch_size: int,
    workers: int | None,
    no_cache: bool,
    force: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """Write feature statistics (mu, sigma, n; optionally features) of SOURCE to an .npz.

    With --format adm, the ADM evaluator's layout: the images as arr_0 (uint8 NHWC) and
    the moments of the pool and spatial features (mu, sigma, mu_s, sigma_s).
    Under torchrun each rank extracts its shard and rank 0 writes the file."""
    set_quiet(quiet)
    from geneval.run.statistics import feature_statistics

    found = feature_statistics(
        source,
        output,
        extractor=extractor,
        extractor_weights=extractor_weights,
        resize=resize,
        layout=layout,
        features=features,
        device=_join_ranks(device),
        batch_size=batch_size,
        workers=workers,
        cache=not no_cache,
        force=force,
        format=file_format,
    )
    if _rank() == 0:
        meta = found.meta or {}
        if meta.get("extractor") and found.layout == "adm":
            what = (
                f"{found.n} images (arr_0) and the moments of {found.dim}-d "
                f"{meta['extractor']} features, ADM layout"
            )
        elif meta.get("extractor"):
            what = f"{found.n} images, {found.dim}-d {meta['extractor']} features"
        else:
            what = f"{found.n} {found.dim}-d feature vectors of {meta.get('features_from')}"
        _info(f"wrote {output}: {what}", quiet)
    return EXIT_OK


# -- cache -------------------------------------------------------------------------------------


@cli.group()
def cache() -> None:
    """Manage the feature cache ($GENEVAL_CACHE/features; bound: $GENEVAL_CACHE_SIZE)."""


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_info(as_json: bool) -> int:
    """Where the feature cache is, how many entries it holds and how large it is."""
    from geneval.feature_cache import FeatureCache, describe_info

    info = FeatureCache.open().info()
    text = json.dumps(info, indent=2) if as_json else printable(describe_info(info))
    click.echo(text, nl=as_json)
    return EXIT_OK


@cache.command("clear")
def cache_clear() -> int:
    """Delete every entry of the feature cache (downloaded statistics are kept)."""
    from geneval.feature_cache import FeatureCache

    store = FeatureCache.open()
    removed = store.clear()
    click.echo(visible(f"removed {removed} feature cache entries from {store.root}"))
    return EXIT_OK


from geneval.weights_command import weights  # noqa: E402 - `geneval weights`, after `cache`

cli.add_command(weights)


# -- plugins -----------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also each metric's direction, meaning and options (defaults, bounds), each model's "
    "samplers and capabilities, each extractor's outputs and each dataset's splits.",
)
def plugins(as_json: bool, verbose: bool) -> int:
    """List installed plugins: kind, name, distribution and version."""
    registry = get_registry()
    rows = registry.listing()
    if verbose:
        for row in rows:
            row["detail"] = plugin_detail(row["kind"], registry.get(row["kind"], row["name"]))
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
        click.echo(json.dumps({"plugins": rows, "failed": failed}, indent=2, default=str))
        return EXIT_OK
    widths = [max([len(h)] + [len(r[h]) for r in rows]) for h in ("kind", "name", "distribution")]
    header = ("kind", "name", "distribution", "version")
    click.echo("  ".join(f"{h:<{w}}" for h, w in zip(header, widths + [0], strict=True)).rstrip())
    for r in rows:
        click.echo(
            "  ".join(f"{r[h]:<{w}}" for h, w in zip(header, widths + [0], strict=True)).rstrip()
        )
        if verbose:
            for line in verbose_lines(r["kind"], r["name"], r["detail"]):
                click.echo(line)
    for f in failed:
        click.echo(f"(failed to load: {f['entry_point']} from {f['distribution']}: {f['error']})")
    return EXIT_OK


from geneval.references_command import references  # noqa: E402 - `geneval references`

cli.add_command(references)


# -- compare -----------------------------------------------------------------------------------


@cli.command()
@click.argument("reports", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--rtol",
    default=DEFAULT_RTOL,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Relative change flagged for metrics that report no uncertainty (e.g. FID).",
)
@click.option(
    "--fail-on-regression", is_flag=True, help="Exit 1 when a metric regressed (default: 0)."
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    help="Also write the comparison as a self-contained HTML page; the runs' curves of each "
    "curve field (e.g. prd.curve) are drawn on one plot.",
)
@_force_option
def compare(
    reports: Sequence[Path],
    rtol: float,
    fail_on_regression: bool,
    html_path: Path | None,
    force: bool,
) -> int:
    """Compare the JSON reports of runs: metrics side by side, deltas against the first, and
    regressions (a change in the worse direction beyond the runs' combined uncertainty, or
    beyond --rtol for a metric without one)."""
    if len(reports) < 2:
        raise InputError("compare needs at least two JSON reports: geneval compare A.json B.json")
    if not math.isfinite(rtol):
        raise InputError(f"--rtol {rtol}: expected a finite number")
    html_output = None if html_path is None else Output(html_path, "--html file")
    if html_output is not None:
        check_outputs([html_output], force=force)
    loaded = [load_report(path) for path in reports]
    names = [path.name for path in reports]
    if len(set(names)) < len(names):
        names = [str(path) for path in reports]
    comparison = compare_reports(loaded, names, rtol=rtol, registry=get_registry())
    if html_output is not None:
        from geneval.report.compare import to_html as comparison_html

        write_outputs(
            [(html_output, comparison_html(comparison))],
            force=force,
            stdout=lambda text: click.echo(text, nl=False),
        )
    click.echo(to_text(comparison), nl=False)
    return EXIT_GATE if fail_on_regression and comparison.regressions else EXIT_OK


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
@click.option("--steps", type=POSITIVE, help="Training steps in total (default: the model's).")
@_device_option
@_seed_option
@click.option("--resume", is_flag=True, help="Continue the run saved at -o up to --steps.")
@click.option(
    "--checkpoint-every", type=int, metavar="N", help="Also write the checkpoint every N steps."
)
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE", help="Training option.")
@_layout_option
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
    layout: str,
    force: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """Train a model plugin on a dataset, an image folder or an array, and write a checkpoint.

    Options are checked before any work. A new run gets every option (defaults filled in);
    with --resume the family gets only the options given, which override the recorded ones.
    """
    from geneval.device import resolve_device
    from geneval.options import parse_assignments
    from geneval.run.resolve import resolve_spec
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
        raise InputError(f"--resume: checkpoint {quote(output)} does not exist")
    # a resumed run rewrites its checkpoint: it must be a regular file in a writable folder
    check_writable(output, force=force or resume, what="checkpoint")
    resolved = resolve_spec(dataset, "training data", registry, layout=layout)
    if resolved.source is None or not resolved.has_images:
        raise InputError(f"--dataset {dataset}: expected images to train on")
    data = images_from_source(resolved.source)
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


@cli.command()
@click.option(
    "--model",
    required=True,
    help="Model to sample from: a model family, FAMILY:CHECKPOINT, or module.path:attribute.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint: a file, a folder or a hub id (default: the family's bundled one).",
)
@click.option("-n", "--num-samples", required=True, type=POSITIVE, help="Number of samples.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="OUT.npz or a folder for PNG files.",
)
@click.option("--sampler", help="Sampler (default: the checkpoint's).")
@click.option("--steps", type=POSITIVE, help="Sampler steps (default: the checkpoint's).")
@_condition_options
@click.option(
    "--opt", "opts", multiple=True, metavar="model.KEY=VALUE", help="Sample option of --model."
)
@_seed_option
@click.option(
    "--batch-size",
    type=POSITIVE,
    help=f"Samples per model call (default {DEFAULTS['sample_batch_size']}).",
)
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
    labels: Path | None,
    prompts: Path | None,
    opts: Sequence[str],
    seed: int,
    batch_size: int | None,
    device: str,
    force: bool,
    quiet: bool,
    debug: bool,
) -> int:
    """Draw samples from a model into an .npz (images uint8 NHWC) or a folder of PNGs.

    With ``--force`` a folder is refilled only when it holds nothing but an earlier
    ``geneval sample`` output (which is removed first); an .npz file is replaced. The
    output's size is checked before sampling, and each block of samples is written as uint8
    as soon as it is drawn (:mod:`geneval.sample_files`).
    """
    import numpy as np

    from geneval.device import resolve_device
    from geneval.generators import load_model, model_source, parse_model, split_model_options
    from geneval.sample_files import (
        StreamedPNGs,
        carried_arrays,
        check_sample_output,
        npz_writer,
        sample_shape,
        uint8_blocks,
    )

    set_quiet(quiet)
    to_npz = output.suffix == ".npz"
    if to_npz:
        check_writable(output, force=force, what="samples file")
    elif output.suffix:
        raise InputError(f"-o {quote(output)}: give an .npz file or a folder name without a suffix")
    else:
        check_image_folder(output, force=force, what="-o folder")
    registry = get_registry()
    spec = parse_model(model, checkpoint, registry)
    if spec.family is not None:
        family = registry.model(spec.family)
        if sampler is not None and sampler not in family.samplers:
            raise InputError(
                f"--sampler {sampler}: model {model} offers {', '.join(family.samplers)}"
            )
    metric_side, model_options = split_model_options(list(opts))
    if metric_side:
        raise InputError(f"--opt {metric_side[0]}: geneval sample takes model.KEY=VALUE only")
    dev = resolve_device(device)
    loaded = load_model(spec, registry, dev)
    source = model_source(
        loaded,
        spec.name,
        num_samples,
        seed=seed,
        sampler=sampler,
        steps=steps,
        batch_size=batch_size,
        labels=labels,
        prompts=prompts,
        options=model_options,
    )
    what = "samples file" if to_npz else "-o folder"
    if source.carried and not to_npz:
        raise InputError(
            f"-o {quote(output)}: the samples are conditioned on "
            f"{' and '.join(sorted(source.carried))}; write an .npz, which keeps them"
        )
    blocks = uint8_blocks(source.batches(0, dev, 0))
    image_shape = loaded.image_shape
    if image_shape is None:  # a generator's image shape is known once it has drawn
        first = next(blocks)
        blocks = itertools.chain([first], blocks)
        image_shape = (first.shape[3], first.shape[1], first.shape[2])
    check_sample_output(output, num_samples, image_shape, folder=not to_npz, what=what)
    if to_npz:
        shape = sample_shape(num_samples, image_shape)
        writer = npz_writer("images", shape, np.uint8, blocks, extra=carried_arrays(source.carried))
        write_atomic(output, writer, force=force, what=what)
    else:
        write_image_folder(output, StreamedPNGs(num_samples, blocks), force=force, what=what)
    _info(f"wrote {num_samples} samples to {output}", quiet)
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------


def _echo_line(message: str) -> None:
    """Exactly one line on stderr, whatever a path or a value in ``message`` held: line
    breaks, ESC and other control characters, and undecodable bytes are shown as escapes
    (:func:`geneval.text.visible`), never cut the line short nor reach the terminal raw."""
    click.echo(visible(message), err=True)


def _error_line(line: str, exc: BaseException) -> None:
    """Print an error line; in a sharded run, ranks other than 0 print only errors of their
    own (an error all ranks agreed on is printed once, by rank 0), naming their rank."""
    rank = _rank()
    if rank and getattr(exc, "shared", False):
        return
    if rank:
        line = line.replace("geneval: error: ", f"geneval: error: rank {rank}: ", 1)
    _echo_line(line)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: map errors onto exit codes with one-line messages.

    Warnings raised while a command runs (geneval's own, and those of torch, PIL and the
    plugins) are caught: ``run`` puts them in its report; other commands print them as
    ``geneval: warning:`` lines after their output. After an error only the error line is
    printed (``--debug`` adds the traceback).

    SIGTERM ends every command as SIGINT does: ``finally`` blocks remove temporary files and
    staging folders, nothing is written, one line, exit 143 (SIGINT: 130). A rank that
    ``run --nproc`` started ends when its launcher dies (:mod:`geneval.interrupts`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _invocation[:] = args
    _launched.clear()
    debug = "--debug" in args
    code: Any = EXIT_OK
    with sigterm_raises():
        parent = parent_from_environment()
        if parent is not None:
            end_with_parent(parent)
        try:
            code = _main(args, debug)
        except Terminated:  # a second signal while an error line was being printed
            code = EXIT_TERMINATED
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _main(args: list[str], debug: bool) -> Any:
    """Run the command ``args``; returns its exit code, having printed one line on error."""
    code: Any = EXIT_OK
    with captured_warnings() as caught:
        try:
            code = cli.main(args=args, prog_name="geneval", standalone_mode=False)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.Abort:
            _echo_line("geneval: aborted")
            code = EXIT_INTERRUPTED
        except Terminated:
            _echo_line("geneval: terminated")
            code = EXIT_TERMINATED
        except click.ClickException as exc:
            if debug:
                traceback.print_exc()
            _error_line(f"geneval: error: {exc.format_message()}", exc)
            code = EXIT_USAGE
        except InputError as exc:
            if debug:
                traceback.print_exc()
            _error_line(f"geneval: error: {exc}", exc)
            code = EXIT_USAGE
        except KeyboardInterrupt:
            _echo_line("geneval: interrupted")
            code = EXIT_INTERRUPTED
        except RankError as exc:  # another rank of a sharded run failed
            if debug:
                traceback.print_exc()
            _error_line(f"geneval: error: {exc}", exc)
            code = EXIT_PLUGIN
        except Exception as exc:  # noqa: BLE001 - a plugin raised: one line, traceback with --debug
            if debug:
                traceback.print_exc()
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _error_line(f"geneval: error: a plugin raised {message} (use --debug for details)", exc)
            code = EXIT_PLUGIN
        if (code in (EXIT_OK, EXIT_GATE, None) or debug) and _rank() == 0 and not _launched:
            for note in caught.drain():
                _echo_line(f"geneval: warning: {note}")
    return code
