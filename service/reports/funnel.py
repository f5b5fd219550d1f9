"""The attrition funnel of the current population, drawn as an SVG picture by us.

Why drawn here and not by a charting library: the picture must work on a hospital network and
in a printed protocol deviation file, so it is one self-contained SVG with no script, no
external font (the generic `sans-serif`) and no stylesheet; and it must be readable without
seeing it, so it has a <title>, a <desc> that says the numbers in words, and every bar carries
its count as text. The numbers are the run summary's (service.store.reports.funnel) over the
current results: the same §3 attrition, so the picture and the API's summary never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape

from service.store.reports import funnel
from service.store.types import Attrition

WIDTH = 760
LABEL_WIDTH = 250
BAR_MAX = 380
ROW = 30
TOP = 56
# Dark blue bars and near-black text on white: both well above WCAG's 4.5:1 contrast.
BAR, RULED_OUT, INK, BACKGROUND = "#1f4e79", "#9c2a00", "#1a1a1a", "#ffffff"


def funnel_steps(attrition: Attrition) -> list[tuple[str, int, int]]:
    """(label, patients left, ruled out at this step): screened, each criterion in §3
    order, then the candidates."""
    steps = [("Screened (current results)", attrition["screened"], 0)]
    for criterion in attrition["criteria"]:
        label = f"{criterion['id']} ({criterion['kind']})"
        steps.append((label, criterion["left"], criterion["ruled_out"]))
    steps.append(("Candidates", attrition["candidate"], 0))
    return steps


def funnel_svg(bodies: Iterable[dict[str, Any]]) -> str:
    """The SVG document of the funnel of these current result bodies (§7 dicts)."""
    attrition = funnel(bodies, 0)
    steps = funnel_steps(attrition)
    total = max(attrition["screened"], 1)
    height = TOP + ROW * len(steps) + 20
    words = "; ".join(f"{label}: {left} left" for label, left, _ in steps)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="funnel-title funnel-desc" '
        f'font-family="sans-serif" font-size="13">',
        '<title id="funnel-title">MEDCARE pre-screening attrition funnel</title>',
        f'<desc id="funnel-desc">{escape(words)}.</desc>',
        f'<rect width="{WIDTH}" height="{height}" fill="{BACKGROUND}"/>',
        f'<text x="12" y="24" font-size="16" font-weight="bold" fill="{INK}">'
        f"Attrition of the current population ({attrition['screened']} screened)</text>",
        f'<text x="12" y="44" fill="{INK}">Patients left after each criterion and all before '
        "it; ruled out: by that criterion alone</text>",
    ]
    for index, (label, left, ruled_out) in enumerate(steps):
        y = TOP + ROW * index
        width = round(BAR_MAX * left / total)
        note = f"{left} left" + (f", {ruled_out} ruled out" if ruled_out else "")
        parts += [
            f'<g class="step" data-left="{left}" data-ruled-out="{ruled_out}">',
            f'<text x="12" y="{y + 17}" fill="{INK}">{escape(label)}</text>',
            f'<rect x="{LABEL_WIDTH}" y="{y + 4}" width="{width}" height="{ROW - 10}" '
            f'fill="{BAR}"/>',
            f'<text x="{LABEL_WIDTH + width + 6}" y="{y + 17}" '
            f'fill="{RULED_OUT if ruled_out else INK}">{note}</text>',
            "</g>",
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
