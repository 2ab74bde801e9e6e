"""Static checks of a self-contained HTML report: its Content-Security-Policy, that nothing
outside the file is referenced, and that every embedded image decodes."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
from PIL import Image

PNG_URI = "data:image/png;base64,"
#: Attributes that make a browser load something.
LOADING_ATTRIBUTES = {"src", "href", "srcset", "action", "poster", "data", "formaction", "ping"}
#: Elements that load or run something outside the page.
FORBIDDEN_TAGS = {"script", "link", "iframe", "object", "embed", "base", "frame", "audio", "video"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.loads: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.metas: list[dict[str, str]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "meta":
            self.metas.append(values)
        if "style" in values:
            self.styles.append(values["style"])
        for key, value in values.items():
            if key in LOADING_ATTRIBUTES:
                self.loads.append((tag, key, value))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        else:
            self.text.append(data)


def csp_directives(content: str) -> dict[str, list[str]]:
    """``"default-src 'none'; img-src data:"`` → ``{"default-src": ["'none'"], ...}``."""
    out = {}
    for part in content.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def check_self_contained(page: str) -> tuple[list[np.ndarray], str]:
    """Assert the page is self-contained; return its images (uint8 RGB arrays, in page
    order) and its visible text."""
    collector = _Collector()
    collector.feed(page)
    forbidden = FORBIDDEN_TAGS & set(collector.tags)
    assert not forbidden, f"elements that load or run something: {forbidden}"
    policies = [
        m["content"]
        for m in collector.metas
        if m.get("http-equiv", "").lower() == "content-security-policy"
    ]
    assert len(policies) == 1, "exactly one Content-Security-Policy meta"
    directives = csp_directives(policies[0])
    assert directives["default-src"] == ["'none'"]
    assert directives["img-src"] == ["data:"]
    assert directives["style-src"] == ["'unsafe-inline'"]
    assert set(directives) == {"default-src", "img-src", "style-src"}
    for style in collector.styles:
        assert "url(" not in style and "@import" not in style, style
    assert not re.search(r"(?i)\b(?:https?|ftp|file|ws|wss):", page.replace(PNG_URI, "")), (
        "a URL in the page"
    )
    images = []
    for tag, attribute, value in collector.loads:
        assert tag == "img" and attribute == "src", (tag, attribute, value[:40])
        assert value.startswith(PNG_URI), value[:40]
        raw = base64.b64decode(value[len(PNG_URI) :], validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            assert img.format == "PNG"
            img.load()
            images.append(np.asarray(img.convert("RGB")))
    return images, " ".join(" ".join(collector.text).split())
