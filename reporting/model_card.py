"""The model card: ``<group>.md`` next to an export, saying what the model is and how to use it.

Written from the checkpoint dict alone (plus the ONNX check, when there is an ONNX file), so
the card never claims anything the ``.pth`` does not hold.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from data.kinds import KIND_WORDS, MIN_TO_LEARN
from model import GRADED, OnnxCheck, describe
from model.checkpoint import ENSEMBLE
from model.config import arch_from_dict
from model.onnx import INPUT_NAME, OUTPUT_NAMES
from model.pt2 import META_FILE

CARD_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # added to the checkpoint's versions
ROWS = (*GRADED, "defect")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions(ckpt: dict, onnx: bool) -> dict[str, str]:
    versions = dict(ckpt.get("versions", {}))
    if onnx:
        for name in CARD_PACKAGES:
            try:
                versions.setdefault(name, metadata.version(name))
            except metadata.PackageNotFoundError:
                continue
    return versions


def _members(ckpt: dict) -> list[dict]:
    """The single-network checkpoints a model is made of: itself, or an ensemble's members."""
    return ckpt["members"] if ckpt.get("kind") == ENSEMBLE else [ckpt]


# Long but linear (about 150 lines): the card's sections in the order they appear, each a few
# lines of markdown; splitting it would only scatter one document over many functions.
def model_card(ckpt: dict, pth: Path, *,
               standalone: Sequence[tuple[Path, Sequence[OnnxCheck]]] = ()) -> str:
    """Markdown describing the export ``pth`` made from checkpoint ``ckpt``, and the files
    next to it that run without this repository (``.pt2``, ``.onnx``) with their checks
    against PyTorch."""
    group = ckpt.get("group", pth.stem)
    members = _members(ckpt)
    ensemble = ckpt.get("ensemble") if ckpt.get("kind") == ENSEMBLE else None
    cfgs = [arch_from_dict(m["arch"]) for m in members]
    cfg = cfgs[0]
    files = {path.suffix: (path, checks) for path, checks in standalone}
    val = ckpt.get("val_metrics", {})
    thresholds = ckpt.get("thresholds", {})
    policy = ckpt.get("threshold_policy", {})
    refit = ckpt.get("retrained")
    lines = [f"# {group}: MILAN eraser inspection model", ""]
    origin = f"study `{ckpt.get('study')}`, trial {ckpt.get('trial')}"
    if ensemble:
        origin = (f"study `{ckpt.get('study')}`: an ensemble of trials "
                  + ", ".join(str(t) for t in ensemble["trials"]))
    metric = (ensemble or {}).get("metric") or members[0].get("train_config", {}).get(
        "metric", "score")
    lines += [f"Exported {ckpt.get('exported', ckpt.get('created'))} from {origin}"
              + (f" (validation {metric} {_fmt(ckpt['value'])})" if "value" in ckpt else "")
              + "."]
    if refit:
        lines += ["", f"**Retrained on train + validation** ({refit['n_erasers']} erasers, "
                  f"{refit['epochs']} epochs = the trial's best epoch, seed {refit['seed']}, no "
                  "early stopping). It has no validation set of its own: the thresholds, the "
                  "validation metrics and the TTA finding below were measured on the trial's "
                  "model before the refit and are kept as they are."]
    if "partial" in ckpt:
        lines += ["", f"**A partial run**: the trial was {ckpt['partial']}, and still had the "
                  "best validation score of the study. Its weights are those of its best epoch "
                  "so far; a longer --budget would have trained it further."]
    for kind, n in ckpt.get("ungradable", {}).items():
        lines += ["", f"**It cannot grade {KIND_WORDS.get(kind, kind)}**: the study's training "
                  f"part held only {n} erasers with them (fewer than {MIN_TO_LEARN}), so its "
                  f"`{kind}` probability is not a learnt score. Label more of them and run a "
                  "new study for a model that grades them."]

    lines += ["", "## Files", "", "| file | sha256 |", "|---|---|",
              f"| `{pth.name}` | `{_sha256(pth)}` |"]
    lines += [f"| `{path.name}` | `{_sha256(path)}` |" for path, _ in standalone]

    lines += ["", "## Data", "",
              f"- data hash `{ckpt.get('data_hash', 'unknown')}`",
              f"- split hash `{ckpt.get('split_hash', 'unknown')}`"]
    for m, c in zip(members, cfgs, strict=True):
        whose = f"trial {m.get('trial')}: " if ensemble else ""
        lines += [f"- {whose}erasers of {ckpt.get('source_size', 310)} px, channels used: "
                  f"{', '.join(c.channels)}; the network sees {c.input_size} px; "
                  "normalisation (per used channel, [0, 1] units): mean "
                  f"{_fmt([round(v, 4) for v in m['normalization']['mean']])}, std "
                  f"{_fmt([round(v, 4) for v in m['normalization']['std']])}"]

    lines += ["", "## Model", ""]
    if ensemble:
        lines += [f"**An ensemble of {len(members)} trials**: the weighted mean of their "
                  "probabilities. It was chosen by greedy ensemble selection (Caruana et al. "
                  f"2004) from the {ensemble['pool']} best trials on validation, and ships "
                  "because its gain over the single best trial, cross-fitted (each validation "
                  "eraser scored by a blend chosen without it), "
                  f"{ensemble['honest'] - ensemble['single']:+.4f} {metric}, exceeds the noise "
                  f"of that gain on the validation split ({_fmt(ensemble['noise'])}, "
                  "bootstrap standard deviation).", "",
                  "| trial | weight | architecture | head | epoch | validation " + metric + " |",
                  "|---|---|---|---|---|---|"]
        for m, c, w in zip(members, cfgs, ckpt["member_weights"], strict=True):
            lines.append(f"| {m.get('trial')} | {w:.2f} | {describe(c)} | `{c.task}` | "
                         f"{m.get('best_epoch', '')} of {m.get('epochs_run', '')} | "
                         f"{_fmt(m.get('value', m.get('val_metrics', {}).get(metric)))} |")
        lines += ["", "Each member's hyperparameters are in the `.pth` "
                  "(`members[i]['params']`)."]
    else:
        lines.append(f"{describe(cfg)}; `{cfg.task}` head.")
        if "best_epoch" in ckpt:
            lines.append(f"Weights of epoch {ckpt['best_epoch']} of {ckpt.get('epochs_run')}.")
        params = ckpt.get("params", {})
        if params:
            lines += ["", "| hyperparameter | value |", "|---|---|"]
            lines += [f"| `{k}` | {_fmt(v)} |" for k, v in sorted(params.items())]

    test = ckpt.get("test_metrics")
    lines += ["", "## Validation and test metrics" if test else "## Validation metrics", ""]
    if val:
        nan = float("nan")
        lines += ["One-vs-all, as graded (AUC-PR, and F1 at the stored thresholds):", "",
                  "| class | AUC-PR | F1 | precision | recall | threshold |"
                  + (" test AUC-PR | test F1 |" if test else ""),
                  "|---|---|---|---|---|---|" + ("---|---|" if test else "")]
        for name in ROWS:
            lines.append(f"| {name} | " + " | ".join(
                _fmt(val.get(f"{name}_{k}", nan)) for k in ("ap", "f1", "precision", "recall"))
                + f" | {_fmt(thresholds.get(name, nan))} |"
                + (f" {_fmt(test.get(f'{name}_ap', nan))} | {_fmt(test.get(f'{name}_f1', nan))} |"
                   if test else ""))
        lines.append(f"| **mean (graded)** | {_fmt(val.get('graded_ap', nan))} | "
                     f"{_fmt(val.get('graded_f1', nan))} | | | |"
                     + (f" {_fmt(test.get('graded_ap', nan))} | {_fmt(test.get('graded_f1', nan))}"
                        " |" if test else ""))
        lines += ["", "The validation figures come from the split that also chose the trial, "
                  "its best epoch and these thresholds: optimistic for new erasers."]
        lines += [f"The test figures come from {test['n']} erasers set aside before the split "
                  "that no trial, epoch or threshold choice ever saw, scored once at export: "
                  "an unbiased estimate for new erasers." if test else "Score labelled "
                  "erasers the study never saw (`python predict.py "
                  f"{pth.name} HELD_OUT/`) for an unbiased figure, or let the study set a test "
                  "split aside (`run_study.py --test-fraction`)."]
    else:
        lines.append("None recorded.")
    if ensemble:
        single_val = ensemble.get("single_val_metrics", {})
        single_test = ensemble.get("single_test_metrics")
        lines += ["", "Single best trial and the shipped ensemble side by side:", "",
                  "| | validation AUC-PR (graded) | validation F1 (graded)"
                  + (" | test AUC-PR (graded) | test F1 (graded) |" if single_test else " |"),
                  "|---|---|---" + ("|---|---|" if single_test else "|")]
        for name, v, t in ((f"trial {ckpt.get('trial')} alone", single_val, single_test),
                           ("ensemble (shipped)", val, test)):
            lines.append(f"| {name} | {_fmt(v.get('graded_ap', math.nan))} | "
                         f"{_fmt(v.get('graded_f1', math.nan))} |"
                         + (f" {_fmt(t.get('graded_ap', math.nan))} | "
                            f"{_fmt(t.get('graded_f1', math.nan))} |" if single_test else ""))

    kind = policy.get("kind", "max_f1")
    rule = ("the cut point with the best F1" if kind == "max_f1" else
            f"the best precision with recall >= {_fmt(policy.get('min_recall'))}")
    lines += ["", "## Operating point", "",
              f"Threshold policy `{kind}`: per class, {rule} on the validation predictions. "
              "An eraser is flagged when its probability is >= the threshold."]
    if "defect_precision" in val:
        lines.append(f"Expected at the defect threshold {_fmt(thresholds.get('defect'))}: "
                     f"precision {_fmt(val['defect_precision'])}, recall "
                     f"{_fmt(val['defect_recall'])}.")

    lines += ["", "## Test-time augmentation", ""]
    tta = ckpt.get("tta")
    if tta:
        verdict = "recommended" if tta["recommended"] else "not recommended"
        lines += [f"Averaging over the 8 flips/90-degree rotations (`predict.py --tta`), "
                  f"{tta['n_val']} validation erasers: **{verdict}** (needs a graded AP gain "
                  f">= {_fmt(tta['min_gain'])}).", "",
                  "| | plain | TTA |", "|---|---|---|"]
        for key in ("graded_ap", "graded_f1", "defect_ap", "defect_f1"):
            lines.append(f"| {key} | {_fmt(tta[key])} | {_fmt(tta[f'{key}_tta'])} |")
        lines += ["", "F1 with TTA is at thresholds re-chosen on the TTA probabilities (stored in "
                  "the `.pth` under `tta.thresholds`; `predict.py --tta` uses them). The ONNX "
                  "graph is single-view."]
    else:
        lines.append("Not measured (exported without verification).")

    if files:
        lines += ["", "## Without this repository", "",
                  "The files below hold the whole graded model, preprocessing included:",
                  "- input: `uint8 (batch, height, width, 6)`, the raw arrays as delivered "
                  "(channels GRAY, AM, G, R, W, NORMAL); channel selection, resizing and "
                  "normalisation happen inside",
                  f"- output `{OUTPUT_NAMES[0]}`: `float32 (batch, 3)`, {', '.join(GRADED)}",
                  f"- output `{OUTPUT_NAMES[1]}`: `float32 (batch,)`",
                  "- batch, height and width are dynamic; thresholds and provenance ride along "
                  f"(`{META_FILE}` inside the `.pt2`, the ONNX model metadata)"]
        runtimes = {".pt2": "torch.export (PyTorch alone)", ".onnx": "onnxruntime"}
        for suffix, (path, checks) in files.items():
            for c in checks:
                lines.append(f"- `{path.name}` checked against the `.pth` with "
                             f"{runtimes.get(suffix, suffix)} on {c.n} {c.name} erasers "
                             f"({c.size} px): max |difference| {c.max_diff:.2g} "
                             f"(tolerance {c.tolerance:.0e})")

    lines += ["", "## Versions", "", ", ".join(
        f"{k} {v}" for k, v in _versions(ckpt, ".onnx" in files).items())]

    source = ckpt.get("source_size", 310)
    lines += ["", "## Loading", "",
              f"With this repository (`images`: uint8 `(N, {source}, {source}, 6)` as "
              "delivered):",
              "", "```python", "import model",
              f"m = model.load({pth.name!r})",
              "probs = model.predict(m, images)  # (N, 4): print, physical, no defect, defect",
              "```", "", "With nothing but torch (the plain dict):", "", "```python",
              "import torch", f"ckpt = torch.load({pth.name!r}, weights_only=True)",
              ("members = ckpt['members']  # each: state_dict, arch, normalization"
               if ensemble else
               "weights, arch, thresholds = ckpt['state_dict'], ckpt['arch'], ckpt['thresholds']"),
              "```"]
    if ".pt2" in files:
        name = files[".pt2"][0].name
        lines += ["", "With nothing but torch, ready to run:", "", "```python",
                  "import torch",
                  f"run = torch.export.load({name!r}).module()",
                  "class_probs, defect_prob = run(torch.from_numpy(images))",
                  "```"]
    if ".onnx" in files:
        name = files[".onnx"][0].name
        lines += ["", "With nothing but onnxruntime:", "", "```python",
                  "import onnxruntime as ort",
                  f"session = ort.InferenceSession({name!r}, "
                  "providers=['CPUExecutionProvider'])",
                  f"class_probs, defect_prob = session.run(None, {{{INPUT_NAME!r}: images}})",
                  "```"]
    return "\n".join(lines) + "\n"
