"""The numbers the papers report on each benchmark (``data_and_evaluation.md`` §3.1), printed by
``evaluate.py`` beside a result as a reference.

Each :class:`PaperResult` names its paper, the registry models it applies to, and the reported
PSNR / SSIM with the paper's own caveats. SSIM definitions differ between papers (§3: several
report MATLAB's 3-D ``ssim``); PSNR comparisons are the meaningful ones.
"""

from __future__ import annotations

from typing import NamedTuple


class PaperResult(NamedTuple):
    paper: str
    models: tuple[str, ...]  # registry names this number is for
    text: str  # what the paper reports, with its caveat


REPORTED = {
    "gopro": (
        PaperResult("MIMO-UNet", ("mimo_unet",), "GoPro test 31.73 dB / 0.951"),
        PaperResult(
            "MIMO-UNet+ / ++",
            ("mimo_unet_plus",),
            "GoPro test 32.45 / 0.957; ++ (rot4 self-ensemble) 32.68 / 0.959",
        ),
        PaperResult("IDC", ("idc",), "GoPro test 31.11 dB / 0.948"),
        PaperResult("Two-Way", ("two_way",), "GoPro test 30.56 dB / 0.933"),
        PaperResult("GradientNet GAN", ("gradientnet",), "GoPro test 29.2252 dB / 0.8714"),
        PaperResult(
            "SEN + RP-GAN",
            ("rpgan_generator",),
            "GoPro test 30.03 / 30.96 / 31.25 dB (SSIM 0.9352 / 0.9487 / 0.9518) after global "
            "iterations 1 / 2 / 3",
        ),
    ),
    "realblur": (
        PaperResult(
            "MIMO-UNet+ / ++",
            ("mimo_unet_plus", "mimo_unet"),
            "RealBlur-J test, official aligned evaluation: + 31.92 dB / 0.919, ++ 32.05 / 0.921",
        ),
    ),
    "kohler": (
        PaperResult("Two-Way", ("two_way",), "Köhler 26.80 dB / 0.840"),
        PaperResult(
            "GradientNet GAN",
            ("gradientnet",),
            "Köhler 21.3728 dB / 0.6602 (its Köhler protocol differs from the other papers': "
            "it reports Nah et al. at 20.85 dB where Two-Way and SEN + RP-GAN report 26.48)",
        ),
        PaperResult(
            "SEN + RP-GAN",
            ("rpgan_generator",),
            "Köhler 27.25 / 28.46 / 29.19 dB after global iterations 1 / 2 / 3",
        ),
    ),
    "plain": (),
}


def references(protocol: str, model: str | None = None) -> list[PaperResult]:
    """The papers' numbers under ``protocol``: those of ``model`` when it has any, else all."""
    results = list(REPORTED.get(protocol, ()))
    mine = [result for result in results if model in result.models]
    return mine or ([] if model else results)


def reference_lines(protocol: str, model: str | None = None) -> list[str]:
    """``Paper (reported): <text>`` lines for the console and the report."""
    return [f"{result.paper} (reported): {result.text}" for result in references(protocol, model)]
