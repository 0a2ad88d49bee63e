"""Templates for handlers: Jinja2 or Mako, imported only when an app uses them.

Both are optional (``pip install brubeck[jinja2]`` or ``brubeck[mako]``). The app holds one
loader in its ``template_loader`` setting (the original Brubeck's name); handlers mix in
``Jinja2Rendering`` or ``MakoRendering`` and call ``render_template``. HTML is escaped by
default in both: a template must opt out (``|safe`` in Jinja2, ``| n`` in Mako). Templates
see ``handler``, ``static_url`` and ``xsrf_form_html`` (markup, never escaped) besides the
context a handler passes.
"""

from __future__ import annotations

from typing import Any

from .response import Response


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(f"{package} is not installed: pip install 'brubeck[{extra}]'")


def load_jinja2_env(template_dir: str, **options: Any) -> Any:
    """A Jinja2 ``Environment`` over ``template_dir``, autoescaping HTML and XML templates."""
    try:
        import jinja2
    except ImportError:
        raise _missing("Jinja2", "jinja2") from None
    # Every template escapes unless its name says it is not markup: ``render_template`` sends
    # text/html whatever the extension (``page.html.j2``, ``.jinja``, ``.xhtml``…).
    options.setdefault(
        "autoescape",
        jinja2.select_autoescape(
            enabled_extensions=(),
            disabled_extensions=("txt", "text", "md", "csv", "json"),
            default_for_string=True,
            default=True,
        ),
    )
    return jinja2.Environment(loader=jinja2.FileSystemLoader(template_dir), **options)


def load_mako_env(template_dir: str, **options: Any) -> Any:
    """A Mako ``TemplateLookup`` over ``template_dir``, escaping HTML by default."""
    try:
        from mako.lookup import TemplateLookup
    except ImportError:
        raise _missing("Mako", "mako") from None
    options.setdefault("default_filters", ["h"])
    return TemplateLookup(directories=[template_dir], **options)


class _TemplateRendering:
    """Shared by the mixins: find the loader, render, answer with the text."""

    def _loader(self) -> Any:
        loader = self.settings.get("template_loader")  # type: ignore[attr-defined]
        if loader is None:
            raise RuntimeError(
                "render_template needs a loader: Brubeck(..., "
                "template_loader=load_jinja2_env('templates'))"
            )
        return loader

    def xsrf_form_html(self) -> Any:
        """The hidden ``_xsrf`` input, as ``Markup`` so that escaping templates keep it HTML."""
        from markupsafe import Markup  # installed with both Jinja2 and Mako

        return Markup(super().xsrf_form_html())  # type: ignore[misc]

    def render_template(
        self, template_file: str, _status_code: int = 200, **context: Any
    ) -> Response:
        """Render ``template_file`` with ``context`` as the response; ``handler``,
        ``static_url`` and ``xsrf_form_html`` are there unless ``context`` has them."""
        context.setdefault("handler", self)
        context.setdefault("static_url", self.static_url)  # type: ignore[attr-defined]
        context.setdefault("xsrf_form_html", self.xsrf_form_html)
        text = self.render_template_string(template_file, **context)
        self.set_body(text)  # type: ignore[attr-defined]
        return self.render(status_code=_status_code)  # type: ignore[attr-defined]

    def render_template_string(self, template_file: str, **context: Any) -> str:
        raise NotImplementedError


class Jinja2Rendering(_TemplateRendering):
    """Mix into a handler to render Jinja2 templates."""

    def render_template_string(self, template_file: str, **context: Any) -> str:
        return str(self._loader().get_template(template_file).render(**context))


class MakoRendering(_TemplateRendering):
    """Mix into a handler to render Mako templates."""

    def render_template_string(self, template_file: str, **context: Any) -> str:
        template = self._loader().get_template(template_file)
        try:
            return str(template.render(**context))
        except Exception as exc:
            # Mako's traceback names its generated module's lines: add the template's own.
            _note_mako_line(exc, template)
            raise


def _note_mako_line(exc: BaseException, template: Any) -> None:
    from mako.exceptions import RichTraceback

    try:
        records = RichTraceback(exc, exc.__traceback__).records
    except Exception:  # the note is a help; never hide the real error behind it
        records = []
    # (file, line, function, code, template file, template line, …), innermost last.
    lines = [r[5] for r in records if r[4] is not None and r[5] is not None]
    where = f", line {lines[-1]}" if lines else ""
    exc.add_note(f"in Mako template {template.uri!r} ({template.filename}){where}")
