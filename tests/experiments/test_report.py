import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from pairless.errors import PairlessError
from pairless.experiments.report import Report


def _report():
    report = Report("Demo <study>")
    report.add_text("Some **bold** text with `code`.\n\n- one\n- two")
    report.add_text("## Findings\n- first\n- second")
    report.add_table(
        [{"method": "a", "psnr": 30.123456}, {"method": "b", "psnr": 31.0, "extra": 1}],
        caption="Table 1 (data_range=1)",
        name="table1",
    )
    report.add_table([{"x": 1}], caption="Unnamed, not a CSV")
    report.add_table([{"sphere": 10, "rc": 0.5}], caption="RCs", name="rc")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.add_figure(fig, caption="A line", name="line")
    plt.close(fig)
    return report


def test_write_creates_all_files_with_full_precision_csv(tmp_path):
    html_path = _report().write(tmp_path / "out")
    out = tmp_path / "out"
    assert html_path == out / "report.html"
    assert sorted(p.name for p in out.iterdir()) == [
        "line.png",
        "rc.csv",
        "report.html",
        "report.md",
        "results.csv",
    ]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0]["psnr"] == "30.123456" and rows[1]["extra"] == "1" and rows[0]["extra"] == ""
    assert (out / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = html_path.read_text()
    assert "data:image/png;base64," in html and "Demo &lt;study&gt;" in html and "<b>bold</b>" in html
    assert "<li>two</li>" in html and "30.1235" in html
    assert "<h3>Findings</h3>\n<ul><li>first</li><li>second</li></ul>" in html
    md = (out / "report.md").read_text()
    assert (
        md.startswith("# Demo <study>") and "| method | psnr | extra |" in md and "![A line](line.png)" in md
    )
    assert not list(out.glob(".*part*"))


def test_png_path_figure_and_bad_names(tmp_path):
    png = tmp_path / "f.png"
    fig, _ = plt.subplots()
    fig.savefig(png)
    plt.close(fig)
    report = Report("t")
    report.add_figure(png, caption="from file", name="f")
    with pytest.raises(PairlessError, match="already used"):
        report.add_figure(png, caption="again", name="f")
    with pytest.raises(PairlessError, match="safe file name"):
        report.add_table([{"a": 1}], caption="c", name="../evil")
    with pytest.raises(PairlessError, match="no rows"):
        report.add_table([], caption="empty")
    with pytest.raises(PairlessError, match="does not exist"):
        report.add_figure(tmp_path / "missing.png", caption="c", name="g")
    report.write(tmp_path / "r")
    assert (tmp_path / "r" / "f.png").read_bytes() == png.read_bytes()
