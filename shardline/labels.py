"""QR labels to fix on a transport, and printable label sheets for a company's fleet.

A label carries a QR code and, beside it for a human, the UN number, the proper shipping name and
the transport id. The QR payload is what the responder's app understands:

- ``shardline:TR-100001?un=UN1203`` by default, or
- ``https://gateway.example/#t=TR-100001&un=UN1203`` with a base URL, so that a phone's own camera
  opens the app on that transport.

The UN number is on the orange plate of the vehicle anyway; carrying it in the code lets the app
show the public emergency guide at once, even with no signal, while the full sheet loads.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

import segno
from PIL import Image, ImageDraw, ImageFont

from shardline.core.cargo import CargoSheet

SCHEME = "shardline:"
TRANSPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# A label is 100 mm x 50 mm; raster output is drawn at 300 dpi.
LABEL_MM = (100.0, 50.0)
DPI = 300
A4_MM = (210.0, 297.0)
SHEET_MARGIN_MM = (5.0, 10.0)  # left/right, top/bottom: 2 columns x 5 rows of labels on A4
FORMATS = ("svg", "png", "pdf")


class LabelError(ValueError):
    """A label that cannot be made: names the transport or the file and what to do."""


@dataclass(frozen=True)
class LabelInfo:
    transport_id: str
    un_number: str
    proper_shipping_name: str
    hazard_class: str
    company: str

    @classmethod
    def of(cls, sheet: CargoSheet) -> LabelInfo:
        return cls(
            sheet.transport_id,
            sheet.un_number,
            sheet.proper_shipping_name,
            sheet.hazard_class,
            sheet.company,
        )


def payload(transport_id: str, un_number: str, base_url: str | None = None) -> str:
    """The text in the QR code for one transport."""
    if not TRANSPORT_ID.match(transport_id):
        raise LabelError(
            f"transport id {transport_id!r} cannot go on a label: use letters, digits, '.', '_' or '-'"
        )
    if base_url:
        return f"{base_url.rstrip('/')}/#t={quote(transport_id)}&un={quote(un_number)}"
    return f"{SCHEME}{transport_id}?un={un_number}"


def _qr(info: LabelInfo, base_url: str | None) -> segno.QRCode:
    # Error correction Q: a label on a truck gets dirty and scratched.
    return segno.make(payload(info.transport_id, info.un_number, base_url), error="q", micro=False)


def _mm_to_px(mm: float) -> int:
    return round(mm / 25.4 * DPI)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return lines[:3]


# ---- SVG ------------------------------------------------------------------------------------
def _svg_label_body(info: LabelInfo, base_url: str | None) -> str:
    """One label's content in a 100 x 50 user-unit (mm) box."""
    qr = _qr(info, base_url)
    w, _h = qr.symbol_size(scale=1, border=2)
    cell = 44.0 / w
    cells = "".join(
        f"M{x},{y}h1v1h-1z"
        for y, row in enumerate(qr.matrix_iter(scale=1, border=2))
        for x, dark in enumerate(row)
        if dark
    )
    name = "".join(
        f'<text x="50" y="{27 + 4.6 * i:.1f}" font-size="4">{escape(line)}</text>'
        for i, line in enumerate(_wrap(info.proper_shipping_name, 24))
    )
    return (
        '<rect width="100" height="50" fill="#fff" stroke="#000" stroke-width="0.3"/>'
        f'<path transform="translate(3 3) scale({cell:.5f})" fill="#000" d="{cells}"/>'
        '<g font-family="DejaVu Sans, Arial, sans-serif" fill="#000">'
        f'<text x="50" y="13" font-size="10" font-weight="bold">{escape(info.un_number)}</text>'
        f'<text x="50" y="20" font-size="4.2">class {escape(info.hazard_class)}</text>'
        f"{name}"
        f'<text x="50" y="43" font-size="4.2" font-weight="bold">{escape(info.transport_id)}</text>'
        '<text x="50" y="47.5" font-size="2.8">Scan for the emergency sheet</text>'
        "</g>"
    )


def label_svg(info: LabelInfo, base_url: str | None = None) -> str:
    w, h = LABEL_MM
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}mm" height="{h:g}mm" '
        f'viewBox="0 0 {w:g} {h:g}" role="img" '
        f'aria-label="{escape(info.un_number)} {escape(info.transport_id)}">'
        f"{_svg_label_body(info, base_url)}</svg>\n"
    )


# ---- raster (PNG, PDF) ----------------------------------------------------------------------
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size_px)


def label_image(info: LabelInfo, base_url: str | None = None) -> Image.Image:
    """The label at 300 dpi, black on white."""
    w, h = (_mm_to_px(v) for v in LABEL_MM)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w - 1, h - 1), outline=0, width=4)
    qr = _qr(info, base_url)
    buf = io.BytesIO()
    modules = qr.symbol_size(scale=1, border=2)[0]
    side = _mm_to_px(44)
    qr.save(buf, kind="png", scale=max(1, side // modules), border=2)
    code = Image.open(buf).convert("L")
    img.paste(code, (_mm_to_px(3), _mm_to_px(3)))
    x = _mm_to_px(50)
    draw.text((x, _mm_to_px(4)), info.un_number, font=_font(_mm_to_px(9)), fill=0)
    draw.text((x, _mm_to_px(16.5)), f"class {info.hazard_class}", font=_font(_mm_to_px(4)), fill=0)
    for i, line in enumerate(_wrap(info.proper_shipping_name, 24)):
        draw.text((x, _mm_to_px(23.5 + 4.6 * i)), line, font=_font(_mm_to_px(3.8)), fill=0)
    draw.text((x, _mm_to_px(39)), info.transport_id, font=_font(_mm_to_px(4.2)), fill=0)
    draw.text(
        (x, _mm_to_px(45)), "Scan for the emergency sheet", font=_font(_mm_to_px(2.8)), fill=0
    )
    return img


def fleet_pages(infos: Sequence[LabelInfo], base_url: str | None = None) -> list[Image.Image]:
    """A4 pages at 300 dpi with 2 x 5 labels each, to print and cut."""
    pw, ph = (_mm_to_px(v) for v in A4_MM)
    lw, lh = (_mm_to_px(v) for v in LABEL_MM)
    mx, my = (_mm_to_px(v) for v in SHEET_MARGIN_MM)
    per_page = 10
    pages = []
    for start in range(0, len(infos), per_page):
        page = Image.new("L", (pw, ph), 255)
        for i, info in enumerate(infos[start : start + per_page]):
            col, row = i % 2, i // 2
            page.paste(label_image(info, base_url), (mx + col * lw, my + row * (lh + 3)))
        pages.append(page)
    return pages


def _bilevel(img: Image.Image) -> Image.Image:
    # Black and white at 300 dpi prints sharp and keeps a 100-label PDF small.
    return img.convert("1", dither=Image.Dither.NONE)


# ---- writing files --------------------------------------------------------------------------
def output_format(out: Path) -> str:
    kind = out.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise LabelError(f"cannot write {out}: name it .svg, .png or .pdf")
    return kind


def write_label(info: LabelInfo, out: Path, base_url: str | None = None) -> Path:
    kind = output_format(out)
    if kind == "svg":
        out.write_text(label_svg(info, base_url))
    elif kind == "png":
        label_image(info, base_url).save(out, dpi=(DPI, DPI))
    else:
        _bilevel(label_image(info, base_url)).save(out, "PDF", resolution=DPI)
    return out


def write_fleet(infos: Sequence[LabelInfo], out: Path, base_url: str | None = None) -> int:
    """Write every label to a printable PDF (A4, 10 a page); returns the number of pages."""
    if output_format(out) != "pdf":
        raise LabelError(f"a fleet sheet is a PDF to print: name it .pdf, not {out.name}")
    if not infos:
        raise LabelError("no transports to put on the sheet; check --company and --transports")
    pages = [_bilevel(p) for p in fleet_pages(infos, base_url)]
    pages[0].save(out, "PDF", resolution=DPI, save_all=True, append_images=pages[1:])
    return len(pages)


def select(
    sheets: Iterable[CargoSheet], transport_id: str | None = None, company: str | None = None
) -> list[LabelInfo]:
    rows = list(sheets)
    if transport_id is not None:
        found = [s for s in rows if s.transport_id == transport_id]
        if not found:
            raise LabelError(
                f"no transport {transport_id} in the transports file; check the id or pass --transports"
            )
        return [LabelInfo.of(found[0])]
    if company is not None:
        rows = [s for s in rows if s.company == company]
        if not rows:
            raise LabelError(f"no transport of company {company!r} in the transports file")
    return [LabelInfo.of(s) for s in rows]
