"""Regenerate the README's figures (docs/figures/*.png) from a demo run.

    python scripts/make_readme_figures.py                  # train the demo preset, then draw
    python scripts/make_readme_figures.py --run runs/demo  # train/finish that run, then draw
    python scripts/make_readme_figures.py --draw-only      # draw from the run as it is

Trains ``sef train``'s default demo preset into --run (resuming an unfinished run there), then
draws the four figures from its last.pt with the same library calls as ``sef viz`` and shrinks
them to small palette PNGs. The part-localisation numbers go to docs/figures/parts.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

from sef.checkpoint import load_checkpoint
from sef.config import resolve_config
from sef.engine import fit
from sef.errors import SEFError
from sef.trained import load_trained_model
from sef.viz import activation_figure, correlation_figure, curves_figure, parts_figure

ROOT = Path(__file__).resolve().parent.parent


def shrink(source: Path, target: Path, width: int) -> None:
    """Resize to at most ``width`` pixels wide and store as a 128-colour PNG (a few tens of KB)."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            height = round(image.height * width / image.width)
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def finished(run: Path) -> bool:
    """Whether ``run`` holds a checkpoint of its last epoch."""
    if not (run / "last.pt").is_file():
        return False
    state = load_checkpoint(run / "last.pt")
    return state["epoch"] >= state["config"]["optim"]["epochs"]


def train_demo(run: Path, overrides: list[str]) -> None:
    config = resolve_config("demo", overrides=overrides)
    config.run.out = str(run)
    fit(config, resume=(run / "last.pt").is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "readme-figures")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for training")
    parser.add_argument("--width", type=int, default=900, help="maximum PNG width in pixels")
    parser.add_argument("--draw-only", action="store_true", help="draw from --run as it is")
    args = parser.parse_args(argv)
    try:
        return make_figures(args)
    except SEFError as error:  # a run that is not there, a full disk: one line, not a traceback
        parser.error(str(error))


def make_figures(args: argparse.Namespace) -> int:
    """Train or finish --run unless --draw-only, then draw its figures into --out."""
    if not args.draw_only and not finished(args.run):
        train_demo(args.run, args.set)
    trained = load_trained_model(args.run / "last.pt")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        drafts = Path(scratch)
        correlation_figure(trained, drafts / "corr.png", images=64)
        activation_figure(trained, drafts / "cam.png", images=5, seed=1)
        curves_figure(args.run, drafts / "curves.png")
        _, report = parts_figure(trained, drafts / "parts.png", images=800)
        for name in ("corr", "cam", "curves", "parts"):
            shrink(drafts / f"{name}.png", args.out / f"{name}.png", args.width)
    (args.out / "parts.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(report.summary())
    for path in sorted(args.out.glob("*.png")):
        print(f"{path}  {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
