"""The write-up as a manuscript draft: ``manuscript.tex`` from what the study knows, and its PDF.

The brief asks for at most six pages with fixed sections: Title, Author names (with student
ids), Introduction, Data Analysis and Pre-processing, Methodology, Experimental Setup, Results
(validation results and the leaderboard score), Discussion, Conclusion. :func:`manuscript_tex`
fills every section with the study's own numbers, in prose, and with the report's figures and
tables (``report.py`` writes them next to it): the data and their balance, label noise, the
shipped model's pre-processing and augmentation, its architecture, the training settings and
why they won, the search, validation and test results. Where only the team can write (the
introduction, the discussion, the leaderboard score) it leaves a framed note saying what
belongs there.

The layout is a two-column article of 10 pt Times on A4 (IEEE-like) that a plain TeX
installation has: ``article``, ``geometry``, ``mathptmx``, ``graphicx``, ``booktabs``,
``caption``. :func:`compile_pdf` runs ``latexmk``, ``pdflatex`` or ``tectonic``, whichever the
machine has, and reads the pages, undefined references and overfull lines off its log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.config import BackboneConfig, PatchConfig
from reporting.tables import latex_escape as escape
from training.config import RunConfig

MAX_PAGES = 6  # the brief's limit
OVERFULL_TOLERANCE_PT = 2.0  # lines sticking out by less are invisible in print
ENGINES = ("latexmk", "pdflatex", "tectonic")
COMPILE_TIMEOUT = 180  # seconds; a first tectonic run downloads its bundle


class ManuscriptError(Exception):
    """The manuscript could not be compiled (message is user-facing)."""


@dataclass(frozen=True)
class TitlePage:
    """The title block: the paper's title, its authors as ``"Name (student id)"``, the team."""

    title: str = "Inspecting MILAN erasers with a searched convolutional network"
    authors: tuple[str, ...] = ()
    group: str = ""


@dataclass
class Facts:
    """What the report's sections found that the manuscript's prose needs (filled by
    ``reporting.study_report``)."""

    importances: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)  # per class: AUC-PR, F1
    test: dict[str, float] = field(default_factory=dict)
    architecture: list[tuple[str, str]] = field(default_factory=list)  # (setting, value)


PREAMBLE = r"""\documentclass[10pt,twocolumn,a4paper]{article}
\usepackage[T1]{fontenc}
\usepackage{mathptmx}
\usepackage[margin=17mm,columnsep=6mm]{geometry}
\usepackage{graphicx}
\usepackage{booktabs}
\usepackage{array}
\usepackage[font=small,labelfont=bf,skip=3pt]{caption}
\setlength{\textfloatsep}{8pt plus 2pt minus 2pt}
\setlength{\floatsep}{6pt plus 2pt minus 2pt}
\setlength{\dbltextfloatsep}{8pt plus 2pt minus 2pt}
\newcommand{\towrite}[1]{\par\noindent\fbox{\parbox{\dimexpr\linewidth-2\fboxsep-2\fboxrule}%
{\small\itshape To write: #1}}\par}
\newcommand{\fittable}[2]{\resizebox{#1}{!}{\input{#2}}}
"""


def _figure(name: str, caption: str, files: set[str], *, wide: bool = False) -> list[str]:
    if f"{name}.pdf" not in files:
        return []
    env = "figure*" if wide else "figure"
    width = r"\textwidth" if wide else r"\columnwidth"
    return [rf"\begin{{{env}}}[tbp]", r"\centering",
            rf"\includegraphics[width={width}]{{{name}.pdf}}",
            rf"\caption{{{caption}}}\label{{fig:{name}}}", rf"\end{{{env}}}", ""]


def _table(name: str, caption: str, files: set[str], *, wide: bool = False) -> list[str]:
    if f"{name}.tex" not in files:
        return []
    env = "table*" if wide else "table"
    width = r"\textwidth" if wide else r"\columnwidth"
    return [rf"\begin{{{env}}}[tbp]", r"\centering", rf"\caption{{{caption}}}",
            rf"\label{{tab:{name}}}", rf"\fittable{{{width}}}{{{name}.tex}}", rf"\end{{{env}}}",
            ""]


def _see(have: set[str], *names: str) -> str:
    """`` (Table 1, Fig. 2)`` for those of the floats ``names`` (``tab:x``, ``fig:y``) that
    the report holds; nothing when none: a reference never dangles."""
    refs = [("Table~" if n.startswith("tab:") else "Fig.~") + rf"\ref{{{n}}}" for n in names
            if f"{n[4:]}.{'tex' if n.startswith('tab:') else 'pdf'}" in have]
    return f" ({', '.join(refs)})" if refs else ""


def _family(cfg: RunConfig | None) -> str:
    if cfg is None:
        return "a convolutional network"
    m = cfg.model
    if isinstance(m, PatchConfig):
        return (f"the local features of an ImageNet backbone ({escape(m.backbone)}), scored "
                "patch by patch with a memory bank of good erasers' patches")
    if isinstance(m, BackboneConfig):
        return f"an ImageNet backbone ({escape(m.backbone)}) under an inspection head"
    return "a convolutional network trained from scratch"


def _origin(best, study) -> str:
    portfolio = best.user_attrs.get("portfolio")
    retry = best.user_attrs.get("retry_of")
    if portfolio:
        return (f"It is one of the proven starting points the search queues first "
                f"(\\texttt{{{escape(portfolio)}}}): it won against every configuration the "
                "sampler proposed afterwards.")
    if retry is not None:
        return f"It reran trial {retry}, interrupted earlier, with the same parameters."
    return f"The search's sampler proposed it as trial {best.number}."


def _training_rows(cfg: RunConfig) -> list[tuple[str, str]]:
    t, a = cfg.train, cfg.augment
    rows = [("optimiser", f"{t.optimizer}, learning rate {t.lr:.2g}, weight decay "
                          f"{t.weight_decay:.2g}"),
            ("schedule", f"{t.schedule}, up to {t.epochs} epochs, batch {t.batch_size}, "
                         f"early stopping after {t.early_stop_patience}"),
            ("loss", t.loss + (f" (gamma {t.focal_gamma:.2g})" if t.loss == "focal" else "")
             + (f", positives weighted x{t.pos_weight_factor:.2g}" if t.pos_weight_factor
                else "") + (", balanced batches" if t.sampling == "balanced" else "")),
            ("label smoothing", f"{t.label_smoothing:.2g} (negatives {t.neg_smoothing:.2g})"),
            ("gradient clipping", f"{t.grad_clip:g}" if t.grad_clip else "none"),
            ("selection", f"best epoch by validation {t.metric}; thresholds "
                          + ("of the best F1" if t.threshold == "max_f1" else
                             f"of the best precision at recall >= {t.min_recall}")),
            ("flips", "yes" if a.flips else "no")]
    if t.flagged_weight != 1.0:
        rows.append(("suspected mislabels", f"loss weight {t.flagged_weight:.2f}"))
    return rows


def _kv_table(rows: Sequence[tuple[str, str]], caption: str, label: str) -> list[str]:
    body = [rf"{escape(k)} & {escape(v)} \\" for k, v in rows]
    return [r"\begin{table}[tbp]", r"\centering", rf"\caption{{{caption}}}",
            rf"\label{{tab:{label}}}", r"\small",
            r"\begin{tabular}{@{}>{\raggedright\arraybackslash}p{0.36\columnwidth}"
            r"@{\hspace{0.02\columnwidth}}>{\raggedright\arraybackslash}p{0.62\columnwidth}@{}}",
            r"\toprule",
            r"setting & value \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
            r"\end{table}", ""]


def _graded(d: dict[str, float], what: str = "ap") -> str:
    names = (("print_error", "print error"), ("physical_error", "physical error"),
             ("no_defect", "no defect"))
    return ", ".join(f"{label} {d[f'{n}_{what}']:.3f}" for n, label in names
                     if f"{n}_{what}" in d)


# One document read top to bottom (about 150 lines): the sections in the brief's order, each a
# few sentences of the study's numbers and the floats that show them.
def manuscript_tex(study, best, cfg: RunConfig | None, files: Sequence[str], facts: Facts,
                   page: TitlePage = TitlePage(), augmentation: str = "") -> str:
    """The manuscript's LaTeX source: ``files`` are the report's own (figures as PDF, tables
    as ``.tex``) in the same folder."""
    have = set(files)
    a = study.user_attrs
    data, split = a.get("data", {}), a.get("split", {})
    space, plan = a.get("space", {}), a.get("plan") or {}
    metric = space.get("metric", "graded_ap")
    trials = study.get_trials(deepcopy=False)
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    n = data.get("erasers", 0) or 1
    m = cfg.model if cfg is not None else None
    authors = r"\quad ".join(escape(x) for x in page.authors) or \
        r"\textit{Author Name (student id)}"
    val, test = facts.validation, facts.test
    abstract = (
        f"We search {escape(_family(cfg))} for the visual inspection of MILAN erasers: one "
        "model grades each eraser for print errors, physical defects and no defect from six "
        f"illuminations. {states['COMPLETE']} completed trials of a hyperparameter search on "
        f"{data.get('erasers', '?')} erasers with noisy labels chose the model; on "
        f"{split.get('n_val', '?')} validation erasers its mean one-vs-all AUC-PR is "
        f"{val.get('graded_ap', float('nan')):.3f}"
        + (f", and on {test.get('n')} test erasers set aside before the search "
           f"{test.get('graded_ap', float('nan')):.3f}." if test else "."))
    # The title block and the abstract span both columns, above every float of page 1.
    lines = [PREAMBLE, r"\begin{document}", r"\twocolumn[{%", r"\begin{center}",
             rf"{{\LARGE {escape(page.title)}\par}}\vspace{{0.8em}}",
             rf"{{\large {authors}\par}}",
             (rf"\vspace{{0.3em}}{{Group {escape(page.group)}\par}}" if page.group else ""),
             r"\vspace{0.8em}", r"\begin{minipage}{0.86\textwidth}\small",
             rf"\textbf{{Abstract---}}{abstract}", r"\end{minipage}", r"\end{center}",
             r"\vspace{1em}}]", ""]

    lines += [r"\section{Introduction}",
              r"\towrite{the inspection task and why it matters, what makes it hard (small "
              r"print errors, subtle relief defects, noisy labels), what this paper contributes "
              r"and how it is organised.}", ""]

    lines += [r"\section{Data Analysis and Pre-processing}",
              f"The delivery holds {data.get('erasers', '?')} labelled erasers "
              f"({escape(data.get('label_kind', '?'))} labels) of "
              f"{data.get('image_size', '?')}$\\times${data.get('image_size', '?')} pixels in "
              f"six channels ({escape(', '.join(data.get('channels', [])))}): five colour "
              "illuminations, where ink shows, and NORMAL, the surface relief, where physical "
              f"defects show. {data.get('defect', 0)} erasers "
              f"({100 * data.get('defect', 0) / n:.1f}\\,\\%) are labelled defective: "
              f"{data.get('print', 0)} with a print error and {data.get('physical', 0)} with "
              "a physical defect" + _see(have, "tab:class_balance", "fig:class_balance")
              + f". The split keeps {split.get('n_train', '?')} erasers for training and "
              f"{split.get('n_val', '?')} for validation, stratified on the class"
              + (f"; {split.get('n_test')} more were set aside as a test split before the "
                 "search, which no trial, epoch or threshold choice ever saw"
                 if split.get("n_test") else "") + ".", ""]
    lines += _table("class_balance", "Class balance of the given labels.", have)
    lines += _figure("class_balance", "Share of each class in each part of the split.", have)
    sample = next((f[:-4] for f in sorted(have) if f.startswith("samples_1_")
                   and f.endswith(".pdf")), None)
    if sample:
        lines += _figure(sample, "Training erasers with a print error, all six channels.",
                         have, wide=True)
    flagged = a.get("n_flagged", 0)
    lines += [(f"Labels are noisy: confident learning on out-of-fold predictions flagged "
               f"{flagged} erasers as suspected mislabels, and the search tuned their weight in "
               "the loss." if flagged else
               r"The labels were made by an automated system and are noisy; this study "
               r"treats them as given (\texttt{label\_issues.py} ranks suspected mislabels "
               r"for a study that down-weights them)."), ""]
    if m is not None:
        lines += [f"Pre-processing: the model sees the channels "
                  f"{escape(', '.join(m.channels))}, resized to {m.input_size} pixels with an "
                  "antialiased resize in exact integer arithmetic (the same in training, "
                  "inference and the exported graphs) and normalised per channel with the "
                  f"training erasers' mean and standard deviation. Augmentation: "
                  f"{escape(augmentation or 'none')}" + _see(have, "fig:augmentation") + ".",
                  ""]
        lines += _figure("augmentation", "One training eraser as the model sees it, and "
                         "random draws of its augmentation.", have, wide=True)

    lines += [r"\section{Methodology}",
              f"The model is {escape(_family(cfg))}: "
              f"\\texttt{{{escape(best.user_attrs.get('architecture', '?'))}}} "
              f"({best.user_attrs.get('params', 0):,} trainable parameters, "
              f"{best.user_attrs.get('macs', 0) / 1e6:.0f}\\,M multiply-adds per eraser)"
              + (" (Table~\\ref{tab:architecture})" if facts.architecture else "")
              + ". " + _origin(best, study), ""]
    if facts.architecture:
        lines += _kv_table(facts.architecture, "Architecture of the chosen model.",
                           "architecture")
    lines += [r"\towrite{why this architecture suits the task, in the team's words.}", ""]

    top = list(facts.importances.items())[:3]
    lines += [r"\section{Experimental Setup}",
              f"A hyperparameter search with Optuna trained {len(trials)} trials "
              f"({states['COMPLETE']} completed, {states['PRUNED']} stopped early by the "
              f"Hyperband pruner, {states['FAIL']} failed) within a budget of "
              f"{plan.get('budget_seconds', 0) / 60:.0f} minutes"
              + (f" on the search-space rung \\texttt{{{escape(plan.get('tier'))}}} the budget "
                 "affords" if plan.get("tier") else "")
              + f", maximising the validation {escape(metric)} (the report's "
              "\\texttt{search\\_space.tex} lists every range). "
              + ("The parameters that mattered most were "
                 + ", ".join(f"\\texttt{{{escape(k)}}} ({v:.2f})" for k, v in top)
                 + _see(have, "fig:param_importances") + "." if top else ""), ""]
    if cfg is not None:
        lines += _kv_table(_training_rows(cfg), "Training settings of the chosen model.",
                           "training")
    lines += _figure("optimization_history", f"Validation {escape(metric)} of every "
                     "trial, and the best so far.", have)
    lines += _figure("param_importances", "Importance of the most important parameters.",
                     have)

    lines += [r"\section{Results}",
              f"On the {split.get('n_val', '?')} validation erasers the model reaches a "
              f"one-vs-all AUC-PR of {_graded(val)} (mean {val.get('graded_ap', float('nan')):.3f}"
              f") and F1 of {_graded(val, 'f1')} at thresholds chosen on validation"
              + _see(have, "tab:validation_metrics") + ". These figures chose the model and "
              "are optimistic. " + (f"On the {test.get('n')} test erasers the mean AUC-PR is "
                                    f"{test.get('graded_ap', float('nan')):.3f}"
                                    + _see(have, "tab:validation_vs_test")
                                    + ": the unbiased estimate." if test else ""), ""]
    lines += _table("validation_metrics", "Validation results per class (one-vs-all).", have,
                    wide=True)
    lines += _table("validation_vs_test", "Validation and test split side by side; chance: "
                    "the AUC-PR of a guessing model.", have, wide=True)
    lines += _figure("best_trial_curves", "Learning curves: loss and AUC-PR per epoch.", have,
                     wide=True)
    lines += _figure("pr_curves", "Precision-recall per class on validation; the dot is "
                     "the operating point.", have, wide=True)
    lines += _figure("xy_confusion", "Confusion of the classes on validation.", have)
    lines += [r"\towrite{the leaderboard score on the private test set: AUC-PR and F1 per "
              r"class.}", ""]

    lines += [r"\section{Discussion}",
              r"\towrite{why the model works where it does and fails where it does (the worst "
              r"errors in the report's files), the limits of the data and labels, and what "
              r"would improve it.}", ""]
    lines += [r"\section{Conclusion}",
              f"A budgeted search found {escape(_family(cfg))} that grades erasers with a "
              f"validation mean AUC-PR of {val.get('graded_ap', float('nan')):.3f}"
              + (f" and a test mean of {test.get('graded_ap', float('nan')):.3f}"
                 if test else "") + ".",
              r"\towrite{the take-away in two sentences.}", "", r"\end{document}", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Compiled:
    """A compiled manuscript: the PDF, its pages, and what its log says is wrong."""

    pdf: Path
    pages: int
    engine: str
    undefined: tuple[str, ...]  # references or citations LaTeX could not resolve
    overfull: tuple[float, ...]  # points by which lines stick out, beyond the tolerance
    graphics: tuple[str, ...]  # the figure files the PDF includes

    @property
    def too_long(self) -> bool:
        return self.pages > MAX_PAGES


def engine() -> str | None:
    """The first TeX engine on this machine's PATH (:data:`ENGINES`), or None."""
    return next((e for e in ENGINES if shutil.which(e)), None)


def compile_pdf(tex: Path, timeout: float = COMPILE_TIMEOUT) -> Compiled:
    """Compile ``tex`` in its folder into ``<name>.pdf``; :class:`ManuscriptError` when no
    engine is here or the run fails (naming the first error of the log)."""
    found = engine()
    if found is None:
        raise ManuscriptError("no TeX engine here (latexmk, pdflatex or tectonic): install "
                              "one (Debian: apt-get install texlive-latex-recommended "
                              "texlive-fonts-recommended), or compile manuscript.tex "
                              "elsewhere (e.g. upload the report folder to Overleaf).")
    name = tex.name
    runs = {"latexmk": [["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error",
                         name]],
            "pdflatex": [["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name]] * 2,
            "tectonic": [["tectonic", "--keep-logs", name]]}[found]
    for cmd in runs:
        try:
            done = subprocess.run(cmd, cwd=tex.parent, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ManuscriptError(f"{found} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            log = tex.with_suffix(".log")
            text = log.read_text(errors="replace") if log.exists() else done.stdout
            tail = (done.stderr or done.stdout).strip().splitlines() or ["?"]
            first = next((ln for ln in text.splitlines() if ln.startswith("!")), tail[-1])
            raise ManuscriptError(f"{found} failed on {tex}: {first}")
    return read_log(tex.with_suffix(".log"), found)


def read_log(log: Path, found: str = "") -> Compiled:
    """What a LaTeX log says: pages, undefined references, overfull lines, included files."""
    text = log.read_text(errors="replace")
    pages = re.search(r"Output written on .*?\((\d+) pages?", text.replace("\n", ""))
    undefined = tuple(re.findall(r"(?:Reference|Citation) `([^']+)' on page \d+ undefined",
                                 text))
    overfull = tuple(float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide",
                                                  text) if float(x) > OVERFULL_TOLERANCE_PT)
    graphics = tuple(sorted(set(re.findall(r"<([^<>\s]+\.pdf)", text))))
    return Compiled(pdf=log.with_suffix(".pdf"), pages=int(pages.group(1)) if pages else 0,
                    engine=found, undefined=undefined, overfull=overfull, graphics=graphics)


def what_to_cut(tex: str) -> list[str]:
    """The manuscript's largest floats (full-width figures and tables first), to name when it
    runs past :data:`MAX_PAGES`."""
    wide = re.findall(r"\\begin\{(figure|table)\*\}.*?\\label\{(?:fig|tab):([^}]+)\}", tex,
                      flags=re.S)
    narrow = re.findall(r"\\begin\{(figure|table)\}.*?\\label\{(?:fig|tab):([^}]+)\}", tex,
                        flags=re.S)
    return [f"the full-width {kind} '{name}'" for kind, name in wide] + \
        [f"the {kind} '{name}'" for kind, name in narrow]
