"""QR labels: what the code says, what a person reads beside it, and the printable fleet sheet."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from PIL import Image
from typer.testing import CliRunner

from shardline import labels
from shardline.cli import app
from shardline.core.cargo import read_transports, sample_transports_path


@pytest.fixture(scope="module")
def sheets():
    return read_transports(sample_transports_path())


def test_payload_without_and_with_the_app_url():
    assert labels.payload("TR-100001", "UN1203") == "shardline:TR-100001?un=UN1203"
    assert (
        labels.payload("TR-100001", "UN1203", "https://gw.example/")
        == "https://gw.example/#t=TR-100001&un=UN1203"
    )


@pytest.mark.parametrize("bad", ["", "TR 1", "TR-1?x", "-TR", "x" * 65])
def test_an_id_that_cannot_go_on_a_label_is_refused(bad):
    with pytest.raises(labels.LabelError, match="cannot go on a label"):
        labels.payload(bad, "UN1203")


def test_svg_label_is_well_formed_and_shows_the_un_number(sheets):
    info = labels.LabelInfo.of(sheets[0])
    svg = labels.label_svg(info)
    root = ET.fromstring(svg.split("\n", 1)[1])  # noqa: S314 (our own output)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert info.un_number in texts and info.transport_id in texts
    assert root.get("width") == "100mm" and root.get("height") == "50mm"
    # the code's dark modules are drawn: one square path per module
    assert len(re.findall(r"h1v1h-1z", svg)) > 200


def test_png_label_is_100_by_50_mm_at_300_dpi_black_on_white(sheets, tmp_path):
    out = labels.write_label(labels.LabelInfo.of(sheets[0]), tmp_path / "l.png")
    img = Image.open(out)
    assert img.size == (1181, 591)
    assert img.convert("L").getextrema() == (0, 255)


def test_fleet_sheet_puts_ten_labels_on_each_a4_page(sheets, tmp_path):
    infos = labels.select(sheets, company="org2")
    pages = labels.write_fleet(infos, tmp_path / "fleet.pdf")
    assert pages == -(-len(infos) // 10)
    pdf = (tmp_path / "fleet.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b", pdf)) == pages


def test_cli_writes_each_format(sheets, tmp_path):
    runner = CliRunner()
    tid = sheets[5].transport_id
    for ext in ("svg", "png", "pdf"):
        out = tmp_path / f"label.{ext}"
        res = runner.invoke(app, ["label", tid, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert sheets[5].un_number in res.output and out.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["label"], "give a TRANSPORT_ID or --all"),
        (["label", "TR-100001", "--all"], "give a TRANSPORT_ID or --all"),
        (["label", "TR-999999"], "no transport TR-999999 in the transports file"),
        (["label", "TR-100001", "--out", "x.jpg"], "name it .svg, .png or .pdf"),
        (["label", "--all", "--out", "x.svg"], "a fleet sheet is a PDF"),
        (["label", "--all", "--company", "nobody"], "no transport of company 'nobody'"),
    ],
)
def test_cli_says_what_is_wrong(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
