"""``geneval plugins --verbose``: what each installed plugin declares, in words and as JSON.

Metrics: direction, interpretation, unit, uncertainty field, the feature space of its published
numbers, minimum sample count, needs (with the extractor a need requires), fields and options
(default, bounds, help). Models: training dataset, samplers (the first is the default),
capabilities and training options. Extractors: outputs, resize conventions, minimum sample
count and feature space. Datasets: splits, default split and extractor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geneval.api import Dataset, FeatureExtractor, Metric, ModelFamily, declared, extractor_space
from geneval.capabilities import capability_name
from geneval.options import Option, declared_options
from geneval.report.explain import direction


def _option(option: Option) -> dict[str, Any]:
    return {
        "default": option.default,
        "type": type(option.default).__name__,
        "bounds": option.describe_bounds() or None,
        "help": option.help,
    }


def _metric(obj: Metric) -> dict[str, Any]:
    return {
        "higher_is_better": obj.higher_is_better,
        "direction": direction(obj.higher_is_better),
        "interpretation": obj.interpretation,
        "uncertainty": obj.uncertainty,
        "unit": declared(obj, "unit"),
        "feature_space": declared(obj, "feature_space"),
        "report_panel": declared(obj, "report_panel"),
        "min_samples": obj.min_samples,
        "needs": [
            f"{need.kind} of {need.source}"
            + (
                f" ({', '.join(capability_name(c) for c in need.capabilities)})"
                if need.capabilities
                else ""
            )
            + (f" (requires extractor {need.extractor})" if need.extractor_required else "")
            for need in obj.needs
        ],
        "fields": dict(obj.fields),
        "options": {name: _option(o) for name, o in declared_options(obj).items()},
    }


def _model(obj: ModelFamily) -> dict[str, Any]:
    samplers = list(obj.samplers)
    return {
        "dataset": obj.dataset,
        "samplers": samplers,
        "default_sampler": samplers[0] if samplers else None,
        "capabilities": [capability_name(c) for c in obj.capabilities],
        "train_options": {
            name: _option(o) for name, o in declared_options(obj, "train_options").items()
        },
    }


def _extractor(obj: FeatureExtractor) -> dict[str, Any]:
    return {
        "outputs": dict(obj.outputs),
        "feature_output": obj.feature_output,
        "logits_output": obj.logits_output,
        "resize_options": list(obj.resize_options),
        "default": bool(obj.default),
        "min_samples": obj.min_samples,
        "feature_space": extractor_space(obj),
    }


def _dataset(obj: Dataset) -> dict[str, Any]:
    return {
        "splits": list(obj.splits),
        "default_split": obj.default_split,
        "default_extractor": obj.default_extractor,
        "min_samples": obj.min_samples,
    }


def _command(obj: Any) -> dict[str, Any]:
    text = getattr(obj, "help", None) or getattr(obj, "note", None) or ""
    return {"help": text.strip().splitlines()[0] if text.strip() else ""}


_DETAILS = {
    "metric": _metric,
    "model": _model,
    "extractor": _extractor,
    "dataset": _dataset,
    "command": _command,
    "command_option": _command,
}


def plugin_detail(kind: str, obj: Any) -> dict[str, Any]:
    """What a registered plugin object of ``kind`` declares, as JSON-ready values."""
    describe = _DETAILS.get(kind)
    return describe(obj) if describe is not None else {}


def _options_lines(options: Mapping[str, Mapping[str, Any]], indent: str) -> list[str]:
    lines = []
    for name, o in options.items():
        bounds = f", {o['bounds']}" if o["bounds"] else ""
        text = f" — {o['help']}" if o["help"] else ""
        lines.append(f"{indent}{name} = {o['default']!r} ({o['type']}{bounds}){text}")
    return lines


def verbose_lines(kind: str, name: str, detail: Mapping[str, Any]) -> list[str]:
    """The indented lines ``geneval plugins --verbose`` prints under one plugin."""
    pad = "    "
    lines: list[str] = []
    if kind == "metric":
        lines.append(
            f"{pad}{detail['direction']}: {detail['interpretation'] or '(no description)'}"
        )
        if detail.get("unit"):
            lines.append(f"{pad}unit: {detail['unit']}")
        if detail["uncertainty"]:
            lines.append(f"{pad}uncertainty: {detail['uncertainty']}")
        if detail.get("feature_space"):
            lines.append(f"{pad}published numbers use {detail['feature_space']} features")
        if detail.get("report_panel"):
            lines.append(f"{pad}shown in the report's {detail['report_panel']} panel")
        if detail["min_samples"]:
            lines.append(
                f"{pad}warns below {detail['min_samples']} samples "
                "(or the minimum its extractor or dataset declares)"
            )
        lines.append(f"{pad}needs: {', '.join(detail['needs']) or 'nothing'}")
        if detail["options"]:
            lines.append(f"{pad}options (--opt {name}.KEY=VALUE):")
            lines += _options_lines(detail["options"], pad * 2)
        else:
            lines.append(f"{pad}options: none")
    elif kind == "model":
        samplers = detail["samplers"]
        shown = ", ".join(f"{s} (default)" if i == 0 else s for i, s in enumerate(samplers))
        lines.append(f"{pad}trained on: {detail['dataset'] or '(no bundled checkpoint)'}")
        lines.append(f"{pad}samplers: {shown or 'none'}")
        lines.append(f"{pad}capabilities: {', '.join(detail['capabilities']) or 'sampling only'}")
        if detail["train_options"]:
            lines.append(f"{pad}training options (geneval train --opt KEY=VALUE):")
            lines += _options_lines(detail["train_options"], pad * 2)
    elif kind == "extractor":
        outputs = ", ".join(f"{k} ({v})" for k, v in detail["outputs"].items())
        lines.append(f"{pad}outputs: {outputs}; features: {detail['feature_output']}")
        resize = ", ".join(detail["resize_options"]) or "fixed"
        lines.append(
            f"{pad}resize: {resize}" + ("; the default extractor" if detail["default"] else "")
        )
        if detail["min_samples"]:
            lines.append(
                f"{pad}minimum samples for metrics that declare one: {detail['min_samples']}"
            )
        if detail.get("feature_space") not in (None, name):
            lines.append(f"{pad}feature space: {detail['feature_space']}")
    elif kind == "dataset":
        lines.append(
            f"{pad}splits: {', '.join(detail['splits'])} (default {detail['default_split']}); "
            f"extractor: {detail['default_extractor']}"
        )
    elif detail.get("help"):
        lines.append(f"{pad}{detail['help']}")
    return lines
