"""Draw the app's PNG icons (committed in src/icons/; run again only to change them).

.venv/bin/python shardline/webapp/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ICONS = Path(__file__).parent / "src" / "icons"


def icon(size: int, safe: float) -> Image.Image:
    """A black square with an orange hazard diamond and "UN"; ``safe`` is the maskable inset."""
    img = Image.new("RGB", (size, size), "#000000")
    d = ImageDraw.Draw(img)
    c, r = size / 2, size / 2 * (1 - safe)
    d.polygon(
        [(c, c - r), (c + r, c), (c, c + r), (c - r, c)],
        fill="#ff8c00",
        outline="#ffffff",
        width=max(2, size // 26),
    )
    font = ImageFont.load_default(size=round(r * 0.58))
    d.text((c, c), "UN", font=font, fill="#000000", anchor="mm")
    return img


if __name__ == "__main__":
    icon(192, 0.12).save(ICONS / "icon-192.png", optimize=True)
    icon(512, 0.12).save(ICONS / "icon-512.png", optimize=True)
    icon(512, 0.3).save(ICONS / "icon-maskable-512.png", optimize=True)
