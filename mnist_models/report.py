"""The study's report regenerated from one run: Markdown for viewers, and a self-contained HTML page.

The numbers come from `mnist_models.findings`; the words from the Jinja2 templates in
`mnist_models/templates/`. This module only renders: images are linked relative to the report
directory in Markdown and inlined as data URIs in HTML, which `mnist_models/report.css` styles, and
in the Markdown copy for a viewer without the report's folder (`inline_markdown_images`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import math
import mimetypes
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from urllib.request import url2pathname
from xml.etree import ElementTree

import jinja2
import markdown
import pandas as pd
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor
from PIL import Image

from mnist_models import findings, outputs
from mnist_models.architectures import ARCHITECTURES
from mnist_models.atomic_files import write_bytes, write_text
from mnist_models.study_reference import DIVERGED_BELOW, REFERENCE_LEARNING_RATE, STUDY_EPOCHS, TARGET_LAYER

__all__ = ["ReportContext", "build_report_html", "build_report_markdown", "inline_markdown_images", "write_report"]

MISSING = "—"
_NON_DATA_SOURCE = re.compile(r"""\b(?:src|srcset)\s*=\s*(?!["']?data:)""", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n{3,}")
_MARKDOWN_IMAGE = re.compile(r"!\[(?P<caption>[^\]]*)\]\((?P<source>[^)\s]+)\)")


@dataclass(frozen=True)
class ReportContext:
    """Everything a report is built from: the run's tables, its figures' PNG paths, its settings."""

    tables: Mapping[str, pd.DataFrame]
    figures: Mapping[str, Path]
    settings: Mapping[str, object]
    generated_at: str

    def __post_init__(self) -> None:
        for name, value in (("tables", self.tables), ("figures", self.figures), ("settings", self.settings)):
            if not isinstance(value, Mapping):
                raise ValueError(f"ReportContext.{name} must be a dict; got {type(value).__name__}")
        for name, table in self.tables.items():
            if not isinstance(table, pd.DataFrame):
                raise ValueError(f"table {name!r} must be a pandas DataFrame; got {type(table).__name__}")
        for name, path in self.figures.items():
            if not isinstance(path, (str, os.PathLike)):
                raise ValueError(f"figure {name!r} must be a path to a PNG file; got {type(path).__name__}")


# --------------------------------------------------------------------------- Markdown


def build_report_markdown(context: ReportContext, report_dir: Path) -> str:
    """The study's seven sections, and the across-seed and nightly ones when the run has them, as Markdown
    with images linked relative to `report_dir`."""
    text = _environment().get_template("report.md.j2").render(
        findings=findings.compute_findings(context.tables),
        settings=context.settings,
        generated_at=context.generated_at,
        tables=[spec for name, spec in outputs.TABLES.items() if name in context.tables],
        figure_file=functools.partial(_figure_file, context.figures, Path(report_dir)),
    )
    return _BLANK_LINES.sub("\n\n", text).strip("\n") + "\n"


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mnist_models", "templates"),
        autoescape=False,  # noqa: S701 - the templates write Markdown; python-markdown makes the HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        accuracy=_formatter("{:.4f}"), signed=_formatter("{:+.4f}"), study=_formatter("{:g}"),
        rate=_formatter("{:g}"), p_value=_formatter("{:.2g}"), number=_formatter("{:.4g}"),
        ratio=_formatter("{:.2f}"), factor=factor_text, thousands=_formatter("{:,}"), points=_points, epochs=_epochs,
        setting=_setting_value, cell=_cell, oneline=_oneline,
    )
    environment.globals.update(
        interval=_interval, variant_label=outputs.variant_label, REFERENCE_LEARNING_RATE=REFERENCE_LEARNING_RATE,
        DIVERGED_BELOW=DIVERGED_BELOW, STUDY_EPOCHS=STUDY_EPOCHS, TARGET_LAYER=TARGET_LAYER,
        PLAIN_VARIANT=outputs.PLAIN_VARIANT, MISSING=MISSING,
        model_descriptions={name: model.description for name, model in ARCHITECTURES.items()},
    )
    return environment


@dataclass(frozen=True)
class _FigureFile:
    """Where a figure the report shows is: its file stem, its path if produced, its link if the file exists."""

    stem: str
    path: Path | None
    link: str | None


def _figure_file(figures: Mapping[str, Path], report_dir: Path, name: str, model: str | None = None) -> _FigureFile:
    """The figure declared in the outputs registry as `name` (formatted with `model` when per model)."""
    if name not in outputs.FIGURES and name not in outputs.DATA_FIGURES and name not in outputs.NIGHTLY_FIGURES:
        raise ValueError(f"the report shows figure {name!r}, which mnist_models.outputs does not declare")
    stem = name.format(model=model) if model is not None else name
    path = figures.get(stem)
    if path is None:
        return _FigureFile(stem, None, None)
    if not Path(path).is_file():
        return _FigureFile(stem, Path(path), None)
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(report_dir))
    return _FigureFile(stem, Path(path), quote(Path(relative).as_posix()))


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _formatter(spec: str):
    return lambda value: MISSING if _is_missing(value) else spec.format(value)


def factor_text(value: float | None) -> str:
    """A ratio that may span orders of magnitude: 1143.2 -> "1,143", 16.31 -> "16.3", 1.0 -> "1.00",
    5.7e-42 -> "5.7e-42"."""
    if _is_missing(value):
        return MISSING
    if value != 0 and not 1e-3 <= abs(value) < 1e7:  # beyond what digits can show at a glance
        return f"{value:.2g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def _points(difference: float | None) -> str:
    """An accuracy difference in percentage points, signed: 0.029 -> "+2.90"."""
    return MISSING if _is_missing(difference) else f"{difference * 100:+.2f}"


def _interval(low: float | None, high: float | None) -> str:
    return MISSING if _is_missing(low) or _is_missing(high) else f"{low:.4f}–{high:.4f}"


def _epochs(count: int) -> str:
    return "1 epoch" if count == 1 else f"{count} epochs"


def _cell(value: object) -> str:
    """A table cell's text: a pipe or a line break would end the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _oneline(text: str) -> str:
    """A sentence written over several template lines, as one line (Markdown list items need that)."""
    return " ".join(str(text).split())


def _setting_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting_value(item) for item in value) or "none"
    return str(value)


# --------------------------------------------------------------------------- HTML


def build_report_html(markdown_text: str, report_dir: Path, title: str) -> str:
    """A self-contained HTML page: the Markdown rendered, its local images inlined as data URIs."""
    converter = markdown.Markdown(extensions=["tables", _SelfContainedExtension(Path(report_dir))])
    body = converter.convert(markdown_text)
    leftover = _NON_DATA_SOURCE.search(body)
    if leftover:
        excerpt = body[leftover.start(): leftover.start() + 80]
        raise ValueError(
            f"the report would load an external resource ({excerpt!r}); only Markdown images are inlined, "
            "so write images as ![caption](path) instead of raw HTML"
        )
    css = resources.files("mnist_models").joinpath("report.css").read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'  # stops the browser asking for /favicon.ico
        f"<style>\n{css}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


class _SelfContainedExtension(Extension):
    """Inlines every local image as a data URI and turns image-plus-caption paragraphs into figures."""

    def __init__(self, report_dir: Path) -> None:
        super().__init__()
        self.report_dir = report_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the markdown package's name)
        # Below the inline processor (20), which is what creates the <img> elements.
        md.treeprocessors.register(_SelfContainedImages(md, self.report_dir), "self_contained_images", 5)


class _SelfContainedImages(Treeprocessor):
    def __init__(self, md: markdown.Markdown, report_dir: Path) -> None:
        super().__init__(md)
        self.report_dir = report_dir

    def run(self, root: ElementTree.Element) -> None:
        for image in root.iter("img"):
            image.set("src", _data_uri(image.get("src", ""), self.report_dir))
        for parent in root.iter():
            for paragraph in list(parent):
                if paragraph.tag == "p":
                    _paragraph_to_figure(paragraph)


def _paragraph_to_figure(paragraph: ElementTree.Element) -> None:
    """`<p><img><br><em>caption</em></p>` (what figures look like in the Markdown) -> `<figure>`."""
    children = list(paragraph)
    tags = [child.tag for child in children]
    if tags != ["img", "br", "em"] or (paragraph.text or "").strip() or any(
        (child.tail or "").strip() for child in children
    ):
        return
    image, line_break, caption = children
    paragraph.tag = "figure"
    paragraph.remove(line_break)
    caption.tag = "figcaption"
    image.tail = caption.tail = None


def _data_uri(source: str, report_dir: Path, convert_png: Callable[[bytes], bytes] | None = None) -> str:
    if source.startswith("data:"):
        return source
    parts = urlsplit(source)
    if parts.scheme in ("http", "https") or source.startswith("//"):
        raise ValueError(
            f"image {source!r} is on the web; report.html must open offline, so save the image next to the "
            "report and link it by a relative path"
        )
    if parts.scheme == "file":
        path = Path(url2pathname(parts.path))
    elif parts.scheme == "":
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            # Lexically, like a browser: report_dir/../figures works before report_dir exists.
            path = Path(os.path.abspath(report_dir / path))
    else:
        raise ValueError(f"image {source!r} uses the unsupported scheme {parts.scheme!r}; use a relative file path")
    if not path.is_file():
        raise FileNotFoundError(
            f"image {source!r} in the report points at {path}, which does not exist; "
            "render the figure first or remove its link"
        )
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise ValueError(f"{path} is linked as an image but is not one (expected .png, .jpg, .gif, .svg or .webp)")
    data = path.read_bytes()
    if convert_png is not None and mime == "image/png":
        data = convert_png(data)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class _KeptPalettePngs:
    """`_palette_png`, each result kept in `folder` under a name made of the image's bytes, Pillow's version and
    the converting code: every run publishes the report, and quantizing its figures again took 2.3 s of a cached
    rerun. `remove_unused` keeps only the conversions asked for since this object was made."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.used = Path(folder), set()

    def __call__(self, data: bytes) -> bytes:
        kept = self.folder / (hashlib.sha256(data + Image.__version__.encode() + _palette_png.__code__.co_code)
                              .hexdigest() + ".png")
        self.used.add(kept.name)
        try:
            return kept.read_bytes()
        except FileNotFoundError:
            converted = _palette_png(data)
            write_bytes(kept, converted)
            return converted

    def remove_unused(self) -> None:
        for path in self.folder.glob("*.png"):
            if path.name not in self.used:
                path.unlink(missing_ok=True)


def _palette_png(data: bytes) -> bytes:
    """The PNG on white with at most 256 colours (about a third of a matplotlib figure's bytes), if that is smaller."""
    with Image.open(io.BytesIO(data)) as image:
        on_white = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        encoded = io.BytesIO()
        on_white.convert("RGB").quantize(colors=256).save(encoded, format="PNG", optimize=True)
    return min(data, encoded.getvalue(), key=len)


def inline_markdown_images(markdown_text: str, report_dir: Path, palette_cache: Path | None = None) -> str:
    """The Markdown with every image linked relative to `report_dir` inlined as a data URI of a 256-colour copy,
    for a viewer that cannot open the report's folder (the Prefect UI). With `palette_cache`, each copy is made once
    and kept there, and copies of images no longer in the report are removed."""
    convert = _palette_png if palette_cache is None else _KeptPalettePngs(palette_cache)
    inlined = _MARKDOWN_IMAGE.sub(
        lambda image: f"![{image['caption']}]({_data_uri(image['source'], Path(report_dir), convert)})",
        markdown_text)
    if palette_cache is not None:
        convert.remove_unused()
    if inlined.count("![") != len(_MARKDOWN_IMAGE.findall(inlined)):
        raise ValueError("the report has an image written other than as ![caption](path) (a ']' in its caption?); "
                         "expected every image as ![caption](path) so that it can be inlined")
    return inlined


# --------------------------------------------------------------------------- writing


def write_report(context: ReportContext, report_dir: Path) -> dict[str, Path]:
    """Write report.md and a self-contained report.html into `report_dir`, atomically; return their paths."""
    report_dir = Path(report_dir)
    markdown_text = build_report_markdown(context, report_dir)
    dataset = context.settings.get("dataset")
    title = f"MNIST model study ({dataset})" if dataset else "MNIST model study"
    html_text = build_report_html(markdown_text, report_dir, title)
    return {
        "markdown": write_text(report_dir / "report.md", markdown_text),
        "html": write_text(report_dir / "report.html", html_text),
    }
