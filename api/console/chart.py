"""The roll-out chart: instances per version over time as a stacked-area SVG drawn on
the server (no script, no chart library; the style sheet's CSP allows it inline).
Every text is escaped; colours come from a fixed palette by the version's rank."""
from __future__ import annotations

from markupsafe import Markup, escape

from conductor.updates.progress import Progress

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 150, 12, 28
PALETTE = ("#9aa5b1", "#2b6cb0", "#2f855a", "#b7791f", "#805ad5", "#c53030", "#0987a0",
           "#d53f8c")


def _x(i: int, n: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (i / max(n - 1, 1))


def _y(value: float, top: int) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / max(top, 1))


def _areas(data: Progress) -> list[str]:
    n, top = len(data.times), max(data.total, 1)
    below = [0] * n
    shapes = []
    for rank, version in enumerate(data.versions):
        above = [b + c for b, c in zip(below, data.counts[version])]
        upper = [f"{_x(i, n):.1f},{_y(v, top):.1f}" for i, v in enumerate(above)]
        lower = [f"{_x(i, n):.1f},{_y(v, top):.1f}" for i, v in reversed(list(enumerate(below)))]
        colour = PALETTE[rank % len(PALETTE)]
        shapes.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" '
                      f'fill-opacity="0.85"><title>{escape(version)}: '
                      f'{data.counts[version][-1]} now</title></polygon>')
        y = TOP + 16 * rank + 10
        shapes.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{y - 9}" width="10" height="10" '
                      f'fill="{colour}"/><text x="{WIDTH - RIGHT + 28}" y="{y}">'
                      f'{escape(version)} ({data.counts[version][-1]})</text>')
        below = above
    return shapes


def _axes(data: Progress) -> list[str]:
    top, n = max(data.total, 1), len(data.times)
    base = HEIGHT - BOTTOM
    parts = [f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" '
             'stroke="#5b6470"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#5b6470"/>',
             f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top}</text>',
             f'<text x="{LEFT - 6}" y="{base}" text-anchor="end">0</text>']
    for i in (0, n - 1):
        stamp = data.times[i].strftime("%m-%d %H:%M:%S")
        anchor = "start" if i == 0 else "end"
        parts.append(f'<text x="{_x(i, n):.1f}" y="{base + 18}" text-anchor="{anchor}">'
                     f'{stamp}</text>')
    return parts


def rollout_svg(data: Progress) -> Markup:
    """The chart, or a sentence when no instance has checked in yet."""
    if not data.times:
        return Markup('<p class="muted" id="rollout-chart">No instance has checked in '
                      'yet.</p>')
    body = "".join(_areas(data) + _axes(data))
    return Markup(f'<svg id="rollout-chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
                  'role="img" aria-labelledby="rollout-title" font-size="11" '
                  'font-family="sans-serif" fill="#1b1f24"><title id="rollout-title">'
                  f'Instances per version, {escape(data.times[0].isoformat(" ", "seconds"))}'
                  f' to now</title>{body}</svg>')
