"""The run report (index.html): summary values, captions, failure banner, escaping, robustness, a real browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
import yaml
from PIL import Image

from medmeta_lib.config import PROJECT_ROOT
from medmeta_lib.pipeline.report import FIGURE_CAPTIONS, TEMPLATE_DIR, figure_caption, render_report, write_report
from medmeta_lib.pipeline.report_format import fmt_acc, fmt_diff
from medmeta_lib.pipeline.report_summary import build_summary, changed_parameters
from tests.pipeline.report_runs import STEMS, random_png, result_row, run_dir, run_metrics, table_rows
from tests.pipeline.test_html_export import CHROMIUM, needs_chromium


def test_summary_tables_carry_every_number_with_its_interval(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    html = write_report(run, STEMS, run_metrics()).read_text(encoding="utf-8")
    learners = table_rows(html, "learners")
    assert learners[0][:3] == ["learner", "accuracy (± 95% CI)", "test episodes"]  # no AUROC column: none recorded
    assert learners[1:] == [
        ["protonet ★ best", "62.3% ± 4.1", "600"],
        ["maml", "59.1% ± 3.8", "600"],
        ["anil", "40.0% ± 5.0", "600"],
    ]
    assert 'class="best"' in html and ">inductive<" in html and ">transductive<" not in html
    verdict = re.sub(r"<[^>]+>", "", re.search(r'id="best-vs-runner-up">(.*?)</div>', html, re.S)[1])
    assert (
        "protonet against the runner-up maml" in verdict and "+3.2 ± 5.1 pts" in verdict and "600 episodes" in verdict
    )
    assert "interval includes 0" in verdict
    assert table_rows(html, "label-efficiency") == [
        ["labels per class", "random init", "SimCLR"],
        ["1", "31.0% ± 2.0", "45.2% ± 2.1"],
        ["5", "", "60.0% ± 3.0"],
    ]
    site = table_rows(html, "site-effect")
    # hypot(3, 4) = 5
    assert site[1] == ["hospital_A", "60.0% ± 4.0", "50.0% ± 3.0", "-10.0 ± 5.0 pts", "45.0% ± 3.0", "-15.0 ± 5.0 pts"]
    assert site[3] == ["A", "70.0% ± 10.0", "50.0% ± 10.0"] and "diag" in html
    # the remedy: only the measured deployment, its paired difference in bold (interval excludes 0)
    assert site[-2:] == [
        ["deployment", "plain", "site-invariant", "difference"],
        ["new hospital, labels from the training hospitals", "41.0% ± 2.0", "47.0% ± 2.0", "+6.0 ± 1.5 pts"],
    ]
    assert '<td class="num diag">+6.0 ± 1.5 pts</td>' in html and "new hospital hospital_D" in html
    assert table_rows(html, "adaptation")[1] == ["maml", "20.0% ± 0.0", "70.0% ± 4.0"]
    data = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[html.index('id="data"') : html.index('id="learners"')]))
    assert "synthetic" in data and "720 images (train split)" in data and "4 sites" in data
    assert "Classes (10 images each): a/normal, a/tumour, b/normal." in data


def test_auroc_transductive_and_a_clear_winner(tmp_path: Path) -> None:
    m = run_metrics()
    m[STEMS[2]]["results"] = {
        "protonet": result_row("protonet", 0.8, 0.02, auc=0.9, transductive=True),
        "maml": result_row("maml", 0.7, 0.02, auc=0.81234, transductive=True),
    }
    m[STEMS[2]]["best_vs_runner_up"] = {"mean": 0.1, "ci95": 0.03, "episodes": 600}
    html = render_report(run_dir(tmp_path, metrics=m), STEMS, m)
    assert table_rows(html, "learners")[2] == ["maml", "70.0% ± 2.0", "0.812 ± 0.031", "600"]
    assert ">transductive<" in html and "interval excludes 0" in html


def test_changed_parameters_against_the_notebooks_defaults(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(PROJECT_ROOT / "notebooks" / f"{STEMS[0]}.ipynb", run / f"{STEMS[0]}.ipynb")  # the executed copy
    params = {
        STEMS[0]: {"n_per_class_site": 6, "seed": 0, "output_dir": str(run / STEMS[0])},  # seed 0 is the default
        STEMS[2]: {"encoder_checkpoint": str(run / STEMS[1] / "encoder.safetensors"), "learners": ["maml"]},
    }
    (run / "params.yaml").write_text(yaml.safe_dump(params))
    rows = changed_parameters(run, STEMS)  # 03 has no executed copy here: the registered notebook's defaults
    assert rows == [
        {"notebook": "01", "stem": STEMS[0], "name": "n_per_class_site", "value": "6", "default": "20"},
        {"notebook": "03", "stem": STEMS[2], "name": "learners", "value": '["maml"]', "default": rows[1]["default"]},
    ]
    assert rows[1]["default"].startswith('["protonet", "maml"')
    html = render_report(run, STEMS, {})
    params_rows = table_rows(html, "parameters")
    assert params_rows[0][0] == "01 Data exploration" and "n_per_class_site = 6 (default 20)" in params_rows[0][1]
    assert "encoder.safetensors" not in "".join(map(str, params_rows))  # artifacts passed by the pipeline


def test_a_parameter_shared_by_every_notebook_is_said_once() -> None:
    from medmeta_lib.pipeline.report import _parameter_groups

    titles = {"01": "Data exploration", "02": "Contrastive pretraining"}
    src = {"name": "data_source", "value": "/data/x", "default": "synthetic"}
    rows = [{**src, "notebook": k} for k in titles] + [
        {"name": "epochs", "value": "1", "default": "20", "notebook": "02"}
    ]
    groups = _parameter_groups(rows, titles)
    assert [g["label"] for g in groups] == ["all notebooks", "02 Contrastive pretraining"]
    assert groups[0]["items"] == [src] and [i["name"] for i in groups[1]["items"]] == ["epochs"]
    assert _parameter_groups(rows, {**titles, "03": "Meta-training"})[0]["label"] == "01, 02"
    assert _parameter_groups(None, titles) == []


def test_figures_in_a_grid_with_captions_and_links(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    figs = run / STEMS[0] / "figures"
    random_png(figs / "example_episode.png")
    random_png(figs / "samples_per_class.png")
    random_png(figs / ".example_episode.tmp.png")  # save_figure's temporary file: not a figure
    html = render_report(run, STEMS, run_metrics())
    section = html[html.index(f'id="nb-{STEMS[0]}"') : html.index(f'id="nb-{STEMS[1]}"')]
    srcs = re.findall(r'<img src="([^"]+)"', section)
    assert srcs == [f"{STEMS[0]}/figures/{n}.png" for n in ("samples_per_class", "example_episode", "fig0")]
    assert figure_caption("samples_per_class") in section and FIGURE_CAPTIONS["example_episode"] in section
    assert "Fig0: a figure this notebook wrote" in section  # the generic caption of an unknown figure
    assert f'href="{STEMS[0]}.html"' in section and f'href="{STEMS[0]}.ipynb"' in section
    assert html.count("<figure>") == 6 and 'class="figs"' in html
    assert "<details" in html and "All metrics" in html and "&#34;best_learner&#34;" in html  # raw JSON, collapsed


def test_a_failed_run_shows_what_completed_and_where_it_stopped(tmp_path: Path) -> None:
    run = run_dir(tmp_path, stems=STEMS[:3])
    m = {k: v for k, v in run_metrics().items() if k in STEMS[:2]}
    failure = f"{STEMS[2]}: cell 7 failed with ValueError: bad <value> (executed copy: {run}/{STEMS[2]}.ipynb)"
    html = write_report(run, STEMS, m, failure=failure).read_text(encoding="utf-8")
    banner = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html[html.index('id="failure"') : html.index('id="summary"')]))
    assert "Run stopped in 03 Meta-training" in banner and "bad &lt;value&gt;" in banner
    assert "Completed: 01 Data exploration, 02 Contrastive pretraining." in banner
    assert "Stopped at: 03 Meta-training" in banner and "Not run: 04 Adaptation." in banner
    assert 'class="status-failed"' in html and 'class="status-not-run"' in html
    assert "Run stopped" in html and 'id="learners"' not in html  # 03 wrote no metrics: no learner table
    assert not list(run.glob(".index.html*"))  # written atomically, nothing left behind


MALICIOUS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_names_from_the_data_are_escaped(tmp_path: Path) -> None:
    m = run_metrics()
    m[STEMS[0]]["headline"]["source"] = MALICIOUS
    m[STEMS[0]]["summary"]["class_counts"] = {MALICIOUS: 3, "normal": 4}
    m[STEMS[2]]["results"] = {MALICIOUS: result_row(MALICIOUS, 0.5, 0.1)}
    m[STEMS[2]]["cross_site"] = {MALICIOUS: m[STEMS[2]]["cross_site"]["hospital_A"]}
    run = run_dir(tmp_path, metrics=m)
    random_png(run / STEMS[0] / "figures" / "a'b\"<c>.png")
    html = render_report(run, STEMS, m, failure=f"{STEMS[3]}: {MALICIOUS}")
    assert "<script" not in html and "onerror=alert(1)>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert html.count("&lt;script&gt;") >= 5  # source, class, learner, site, failure (and the JSON dump)


@pytest.mark.parametrize(
    "damage",
    [
        "nothing",
        "nan",
        "none",
        "wrong types",
        "missing keys",
    ],
)
def test_missing_or_broken_metrics_are_left_out_not_fatal(tmp_path: Path, damage: str) -> None:
    def spoil(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: spoil(x) for k, x in v.items()}
        if isinstance(v, list):
            return [spoil(x) for x in v]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return math.nan if damage == "nan" else None
        return v

    m: dict[str, Any] = {
        "nothing": {},
        "nan": spoil(run_metrics()),
        "none": spoil(run_metrics()),
        "wrong types": {
            s: {
                "headline": [1],
                "summary": "x",
                "results": {"x": 5, "y": [1]},
                "best_vs_runner_up": "x",
                "label_efficiency": 3 if s == STEMS[1] else {"a": 1},
                "cross_site": {"A": 5} if s == STEMS[2] else 3,
                "site_transfer": {"rows": 5, "cols": "AB", "acc": "x"},
                "site_remedy": {"encoders": {"plain": 3}, "difference": "x"},
                "adaptation_curves": [1],
                "transductive": "yes",
            }
            for s in STEMS
        },
        "missing keys": {
            s: {"results": {"x": {}}, "site_transfer": {"rows": ["A"]}, "adaptation_curves": {"x": {}}} for s in STEMS
        },
    }[damage]
    run = run_dir(tmp_path, metrics=m)
    html = write_report(run, STEMS, m).read_text(encoding="utf-8")
    assert "NaN" not in html.split("<details")[0] and "None" not in html.split("<details")[0]
    summary = build_summary(run, STEMS, m)
    assert summary["notes"] == []  # nothing raised: the damaged parts are simply absent
    for part in ("learners", "label_efficiency", "cross_site", "site_transfer", "site_remedy", "adaptation"):
        assert summary[part] is None, part
    assert 'id="learners"' not in html and html.count("<figure>") == 4
    if damage == "nan":
        assert '"NaN"' in html.split("<details")[1].replace("&#34;", '"')  # the raw dump says what it was


def test_a_users_two_class_folder(tmp_path: Path) -> None:
    m = {
        STEMS[0]: {
            "headline": {"source": "/data/my xrays", "images": 12, "classes": 2, "sites": 1, "modalities": 1},
            "summary": {"class_counts": {"effusion": 5, "normal": 7}},
        },
        STEMS[2]: {
            "headline": {"best_learner": "protonet"},
            "best_vs_runner_up": None,
            "settings": {"n_way": 2, "k_shot": 1, "transductive": False},
            "results": {"protonet": result_row("protonet", 0.75, 0.1, auc=0.8)},
            "cross_site": {},
        },
        STEMS[3]: {"site_transfer": None, "adaptation_curves": {}},
    }
    html = render_report(run_dir(tmp_path, metrics=m), STEMS, m)
    assert "/data/my xrays" in html and "Classes: effusion (5), normal (7)." in re.sub(r"<[^>]+>", "", html)
    assert table_rows(html, "learners")[1] == ["protonet ★ best", "75.0% ± 10.0", "0.800 ± 0.031", "600"]
    assert "2-way 1-shot tasks" in html and 'id="best-vs-runner-up"' not in html and 'id="site-effect"' not in html


def test_formatting_and_a_self_contained_template() -> None:
    assert (
        fmt_acc(float("nan"), 0.1) is None and fmt_acc(0.5, float("nan")) == "50.0%" and fmt_diff(-0.1) == "-10.0 pts"
    )
    assert (TEMPLATE_DIR / "report.html.j2").is_file()
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["medmeta_lib"]  # globs relative to medmeta_lib/
    package = PROJECT_ROOT / "medmeta_lib"
    assert TEMPLATE_DIR / "report.html.j2" in {f for g in shipped for f in package.glob(g)}  # in an installed package
    assert "jinja2>=3.1" in pyproject["project"]["dependencies"]
    html = render_report(Path("/nonexistent/run"), STEMS, run_metrics())
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html) and "<script" not in html and "<link" not in html


def _screenshot(page: Path, png: Path, profile: Path) -> None:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--hide-scrollbars"]
    cmd += [f"--screenshot={png}", "--window-size=1280,2000", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)


@needs_chromium
def test_the_report_renders_in_a_browser(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    index = write_report(run, STEMS, run_metrics())
    png = tmp_path / "report.png"
    _screenshot(index, png, tmp_path / "profile")
    assert png.stat().st_size > 20_000
    shot = np.asarray(Image.open(png).convert("RGB"))
    assert shot.shape == (2000, 1280, 3)
    top = shot[:700]  # the summary: text, a highlighted best row, card borders
    assert len(np.unique(top.reshape(-1, 3), axis=0)) > 50 and (top < 128).any()
    assert ((shot[..., 0] < 0xE8) & (shot[..., 1] > 0xF0) & (shot[..., 2] < 0xE8)).any()  # the green "best" row
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'p2'}",
            "--dump-dom",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert table_rows(dom, "learners")[1] == ["protonet ★ best", "62.3% ± 4.1", "600"]
    assert len(re.findall(r'<img src="[^"]+/figures/[^"]+\.png"', dom)) == 4
