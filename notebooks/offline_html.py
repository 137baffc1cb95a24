"""Config for `jupyter nbconvert --to html --config notebooks/offline_html.py`: the offline template."""

from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - jupyter's config loader provides it
c.TemplateExporter.extra_template_basedirs = [str(Path(__file__).resolve().parent / "templates")]
c.HTMLExporter.template_name = "offline"
