"""Figures and tables of a study for the write-up, tied together in one report.md.

    python report.py --study NAME [--storage URL] [--artifact-dir DIR] [--out reports/NAME]
                     [--style paper|slides] [--flagged label_issues.csv]
                     [--manuscript [--pdf] --title T --authors "Name (id)" ... --group G]

Follows the write-up's sections (``reporting.study_report``): data, methodology,
experimental setup, results; every figure PDF + 300 dpi PNG in one style, every table
markdown + booktabs LaTeX + CSV. Nothing is retrained. Without the study's data (moved? pass
--data) or weights (pass --artifact-dir) the report still holds everything the study itself
stored, and says what it left out. --manuscript also drafts manuscript.tex, the hand-in's six
pages in the brief's sections with the study's numbers and these figures (marked notes where
only the team can write); --pdf compiles it and says how many pages it made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from cli.checks import at_least, bad_number, folder_problem
from cli.common import HelpFormatter, add_study_location, fail, setup_logging
from data.cache import default_cache_dir
from data.noise import NoiseError
from reporting.manuscript import (
    MAX_PAGES,
    ManuscriptError,
    TitlePage,
    compile_pdf,
    engine,
    what_to_cut,
)
from reporting.plots import STYLES
from reporting.study_report import build_report, read_flagged_list
from search.export import select_trial
from search.study import (
    StudyError,
    artifact_dir_for,
    load_study,
    mask_url,
    open_existing_storage,
    storage_url,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--study", required=True, help="study name")
    add_study_location(p)
    p.add_argument("--trial", type=int, default=None, help="report this trial instead of the "
                   "best")
    p.add_argument("--data", default=None, help="the study's data, if moved since the study")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="decoded-image cache")
    p.add_argument("--style", choices=sorted(STYLES), default="paper",
                   help="paper: 3.3 or 7 in wide, 8 pt text; slides: 10 x 5.6 in, 14 pt")
    p.add_argument("--flagged", metavar="CSV", help="the flagged list the study was run with "
                   "(run_study.py --flagged), for the label-noise examples")
    p.add_argument("--no-predict", action="store_true",
                   help="skip the figures that recompute validation probabilities")
    p.add_argument("--out", default=None, help="output folder (default: reports/<study>)")
    g = p.add_argument_group("manuscript")
    g.add_argument("--manuscript", action="store_true",
                   help="also write manuscript.tex: a two-column draft in the brief's sections")
    g.add_argument("--pdf", action="store_true", help="compile it (latexmk, pdflatex or "
                   "tectonic) and say how many pages it made; implies --manuscript")
    g.add_argument("--title", default=TitlePage.title, help="the paper's title")
    g.add_argument("--authors", nargs="+", default=[], metavar='"NAME (ID)"',
                   help="authors with their student ids (default: a marked placeholder)")
    g.add_argument("--group", default="", help="team name on the title page")
    p.add_argument("--dry-run", action="store_true",
                   help="check the study and print what would be written; write nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(args.storage)
    problem = (bad_number([("--trial", args.trial, at_least(0))])
               or folder_problem(args.out or Path("reports") / args.study, "--out")
               or folder_problem(args.cache_dir, "--cache-dir"))
    if problem:
        return fail(problem)
    if args.pdf and engine() is None:
        return fail("--pdf needs a TeX engine (latexmk, pdflatex or tectonic) and none is "
                    "here: install one (Debian: apt-get install texlive-latex-recommended "
                    "texlive-fonts-recommended), or drop --pdf and compile manuscript.tex "
                    "elsewhere (e.g. Overleaf). Nothing was written.")
    page = (TitlePage(args.title, tuple(args.authors), args.group)
            if args.manuscript or args.pdf else None)
    try:
        storage = open_existing_storage(url)
        study = load_study(args.study, storage)
        best = select_trial(study, args.trial)
        flagged = read_flagged_list(study, args.flagged)
    except StudyError as exc:
        return fail(str(exc))
    except NoiseError as exc:
        return fail(f"--flagged: {exc}")
    out = Path(args.out or Path("reports") / args.study)
    artifact_dir = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(url)
    n = len(study.get_trials(deepcopy=False))
    print(f"study   {args.study} in {mask_url(url)}: {n} trials, reporting trial {best.number} "
          f"({best.value:.4f})")
    if args.dry_run:
        print(f"dry run: would write report.md, figures and tables to {out}/; nothing written.")
        return 0
    try:
        r = build_report(study, best, out, storage=storage, artifact_dir=artifact_dir,
                         data_path=args.data, cache_dir=args.cache_dir,
                         predict=not args.no_predict, style=args.style, flagged=flagged,
                         manuscript=page)
    except OSError as exc:
        return fail(f"cannot write the report into {out}: {exc}.")
    for note in r.notes:
        print(f"note    {note}")
    print(f"wrote   {len(r.files)} files to {out}/; start with {out / 'report.md'}")
    if page is not None:
        print(f"wrote   {out / 'manuscript.tex'} (the hand-in's draft: fill in the framed "
              "'To write' notes)")
    return compile_manuscript(out / "manuscript.tex") if args.pdf else 0


def compile_manuscript(tex: Path) -> int:
    """--pdf: compile, say how many pages it made and what is wrong with it."""
    try:
        done = compile_pdf(tex)
    except ManuscriptError as exc:
        return fail(f"{exc} The report and manuscript.tex are written.")
    print(f"wrote   {done.pdf} ({done.pages} pages, {done.engine})")
    if done.undefined:
        print(f"warning undefined references in the manuscript: {', '.join(done.undefined)}",
              file=sys.stderr)
    if done.overfull:
        print(f"warning {len(done.overfull)} lines stick out of their column (up to "
              f"{max(done.overfull):.0f} pt); see {tex.with_suffix('.log')}", file=sys.stderr)
    if done.too_long:
        cut = what_to_cut(tex.read_text())
        print(f"warning {done.pages} pages: the brief allows {MAX_PAGES}. Cut "
              + ", ".join(cut[:3]) + " first (or shorten the prose you add).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
