#!/usr/bin/env python
"""Render four SVG sources into paired (line art, colour) PNGs: the data of default model v2 (issue 12).

Sources (exactly these; nothing else is read)
    =========== ======================================= ============= ==========================
    source      package                                 licence       line art
    =========== ======================================= ============= ==========================
    openmoji    npm ``openmoji`` 17.0.0                 CC BY-SA 4.0  its own ``black/svg``
    openclipart Debian ``openclipart-svg``              public domain synthesised ("Sketches")
                1:0.18+dfsg-19 (Open Clip Art Library)
    fluent      npm ``@iconify-json/fluent-emoji-flat`` MIT           synthesised
                1.2.6 (Microsoft Fluent Emoji, flat)
    twemoji     npm ``@twemoji/svg`` 15.0.0             CC BY 4.0     synthesised
                (Twemoji graphics, jdecked/twemoji)
    =========== ======================================= ============= ==========================

    Download (exact commands; the last two unpack the .deb, or pass ``--openclipart-deb`` instead)::

        npm pack openmoji@17.0.0                          # openmoji-17.0.0.tgz
        npm pack @iconify-json/fluent-emoji-flat@1.2.6    # iconify-json-fluent-emoji-flat-1.2.6.tgz
        npm pack @twemoji/svg@15.0.0                      # twemoji-svg-15.0.0.tgz
        apt-get download openclipart-svg=1:0.18+dfsg-19   # openclipart-svg_1%3a0.18+dfsg-19_all.deb
        dpkg-deb -x openclipart-svg_1%3a0.18+dfsg-19_all.deb oc   # SVGs in oc/usr/share/openclipart/svg

    Licences, attribution texts and URLs are written into ``OUT/manifest.json`` (``sources``) and
    docs/datasets.md.

Which items are kept (every rule is counted in the manifest: ``sources.<s>.dropped_before_render``
and ``dropped_after_render``)
    openmoji     prepare_openmoji.py's rule, unchanged (both folders, in data/openmoji.json, no
                 flags); no further filter, so its test split is v1's (497 pictures).
    twemoji      drop regional-indicator pairs (two codepoints in 1F1E6..1F1FF: country flags, plain
                 rectangles) and 1F3F4 tag sequences (subdivision flags) -- ``flag_sequence``.
    fluent       the same rule (no such icon in 1.2.6); aliases ignored.
    openclipart  drop ``signs_and_symbols/flags/`` (flags: rectangles, as OpenMoji drops its flags)
                 -- ``flags_folder``; ``special/gradients/`` and ``special/patterns/`` (swatches, not
                 drawings) -- ``swatch_folder``; files whose bytes equal an earlier file (sorted
                 relative paths) -- ``duplicate_content``; files over 4 MB -- ``file_too_large``;
                 files embedding raster images (``<image``) -- ``embedded_raster``.
    all but openmoji, after rendering:
        ``xml_parse_failed`` / ``render_failed`` / ``render_timeout`` (``--timeout`` s per item,
        default 60, enforced by killing the worker process);
        ``blank``: no pixel differs from white by more than 10/255 at the 256 px layout render;
        ``nearly_empty``: under 2 % of the output canvas is drawing (any channel < 245);
        ``greyscale``: under 3 % of drawing pixels have LAB chroma > 12 -- 9 in 10 of these are
        dropped, one in 10 (``sha256("grey:" + source/stem) % 10 == 0``) is kept, because objects
        that really are grey exist and a hint-guided model should see that unhinted regions may stay
        grey, but they teach nothing about colour, so they are kept rare;
        ``sketch_unusable``: no style of the item's fall-back chain gave a usable sketch (below).

Sketches (line art for the sources without one)
    Each item gets one style, chosen by ``u = (sha256(source + "/" + stem) % 1000) / 1000``:
      openclipart: strokes if u < 0.5, regions if u < 0.75, else xdog;
      fluent, twemoji: strokes if u < 1/3, regions if u < 2/3, else xdog.
    Fall-backs when the chosen style gives an unusable sketch: strokes -> regions -> xdog if
    ``sha256("fallback:" + source/stem) % 1000 < 500``, else strokes -> xdog -> regions;
    regions -> xdog; xdog -> regions. The manifest records per item the style used (and its
    parameters), and per source the fall-backs taken.

    strokes   ink of the SVG itself, rewritten and rendered by resvg with the colour picture's crop:
              every visible paint (opacity >= 0.5, not under a filter) becomes black if it is ink
              and white otherwise -- white, not removed, so that occlusion is kept: a black shape
              drawn under coloured ones (the usual way clip art draws outlines) shows only as the
              ring that shows in the colour picture. Strokes are ink if their CIE L* < 70 (any
              hue: outlines are often dark colours). OpenClipart only: near-black fills
              (L* < 30 and chroma < 20) are ink too ("dark paths"); the emoji sources are
              strokes-only, since their dark fills are dark regions (hair, dark skin), not
              outlines. Text, images and filtered elements are hidden. Line darkness is then
              normalised (gain so the 90th percentile of line darkness is black, at most 4x).
              Usable only if at least 60 % of the colour picture's region-boundary pixels lie
              within 2 px (at 128 px) of a line pixel, and at most 30 % of line pixels lie over
              3 px deep inside ink (solid black areas, not lines).
    regions   boundaries of colour regions of the colour picture: neighbouring pixels with CIE76
              dE < 5 are joined (so gradients stay one region); slivers (regions where under 10 %
              of the pixels have their whole 3x3 neighbourhood in the region, or under 6 px) are
              given to the nearest remaining region. A sliver pixel whose colour is not (within
              48/255 RGB) a mix of the regions around it is a thin drawn line (a 1-2 px outline, a
              straw) and is drawn as it is; the rest are anti-aliasing seams. A pixel is a boundary
              if its right or lower neighbour has another label; boundaries are dilated to w px,
              w in {1, 2, 3, 4} (weights .3/.35/.2/.15, from ``sha256("width:" + source/stem)``)
              times size / 128; if that sketch is too dark or too solid (thin drawings, whose
              wide lines merge), w - 1, ..., 1 are tried (the manifest records both widths).
    xdog      sketchcolor.data.xdog with XDoGParams.random(torch generator seeded with
              ``sha256("xdog:" + source/stem) % 2**63``, scale = size / 128); usable only if it
              covers at least 50 % of the region boundaries (as above).
    Every sketch (the held-out style too) is unusable if under 0.5 % or over 45 % of the canvas
    is line (L < 128), or over 30 % of its line pixels lie more than 3 px (at 128 px) inside the
    line area (filled silhouettes, merged lines: not line art).

Held-out line style ("pencil", never used in training)
    Soft grey lines from the gradient magnitude of the blurred lightness of the colour picture
    (Gaussian sigma 1 px at 128 px, Sobel magnitude m, sketch = 1 - clip(m / 0.09) ** 0.8): the
    find-edges/pencil filter of photo editors. Applied to test pictures only: per source the kept
    test items ordered by ``sha256("pencil:" + source/stem)``, at most one per emoji key (no two
    skin tones of one emoji) or OpenClipart group, the first 150 whose pencil sketch is usable.

Splits (deterministic; never depend on --size, --workers or --limit)
    openmoji     prepare_openmoji.py's by-drawing split (identical to v1's test split).
    twemoji, fluent
                 each item maps to an emoji key: its codepoint sequence (Twemoji: the file name;
                 Fluent: chars.json codepoint -> name, names missing there with a skin-tone suffix
                 use their base name's codepoints, else ``name:<name>``), upper-case, with FE0F and
                 the skin-tone modifiers 1F3FB..1F3FF removed. A key that is in OpenMoji's test
                 split goes to test, one in OpenMoji's train split to train, any other to test if
                 ``sha256(key) % 10 == 9``. So an emoji in any test split is in no training split.
    openclipart  group key = file name without folder and ``.svg``, lower-cased, trailing
                 ``_NN``/digits/underscores removed (versions and the same name in several folders
                 stay together); test if ``sha256(key) % 10 == 9``.

Output (``sketchcolor train --data OUT/train``, ``sketchcolor eval --data OUT/test/<source>``)
    OUT/train/sketch/<source>/<stem>.png          8-bit greyscale ('L'), dark lines on white
    OUT/train/color/<source>/<stem>.png           8-bit RGB composited on white
    OUT/test/<source>/{sketch,color}/<stem>.png   the held-out pictures of each source
    OUT/test/pencil/{sketch,color}/<source>-<stem>.png
    OUT/manifest.json                             sources, licences, rules, counts, per-item styles
    Pictures are square, ``--size`` px. OpenMoji is rendered exactly as prepare_openmoji.py does
    (full 72x72 view box). The other sources are cropped to the bounding box of their drawing
    (non-white pixels of a 256 px render, 0.25 % trimmed per side against specks) with a 6 % margin
    each side and letterboxed (aspect kept, centred, white padding) by giving resvg a square view
    box around that box. Written files are complete (temporary name + os.replace); existing files
    whose recorded rules version matches are skipped, so runs resume; dropped items leave a marker
    in OUT/.dropped/ so they are not rendered again. A full run (no --limit) deletes outputs that
    are not kept items (left by a run under other rules); a --limit run is for a fresh folder.

``data_digest`` per split: sha256 of the sorted lines ``"{source}/{stem}\\n"`` followed by
``"size={size}\\n"`` (UTF-8), the rule of prepare_openmoji.py.

Example
    python scripts/prepare_sources.py --out data/v2 --size 128 --workers 2 \\
        --openmoji-tarball /work/data/openmoji-17.0.0.tgz \\
        --openclipart-dir /work/data/oc/usr/share/openclipart/svg \\
        --fluent-tarball /work/data/iconify-json-fluent-emoji-flat-1.2.6.tgz \\
        --twemoji-tarball /work/data/twemoji-svg-15.0.0.tgz
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, PngImagePlugin


def _load_prepare_openmoji() -> Any:
    name = "prepare_openmoji"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("prepare_openmoji.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pom = _load_prepare_openmoji()

#: Bumped whenever a rule or a style changes; files written under another version are redone.
RULES_VERSION = 2
SOURCES = ("openmoji", "openclipart", "fluent", "twemoji")
EMOJI_SOURCES = ("openmoji", "fluent", "twemoji")
STYLES = ("strokes", "regions", "xdog")
HELD_OUT_STYLE = "pencil"
TEST_EVERY = 10
PENCIL_PER_SOURCE = 150
LAYOUT_SIZE = 256  # px of the render whose non-white pixels give the crop box
CROP_MARGIN = 0.06  # of the square side, each side
CROP_TRIM = 0.0025  # fraction of drawing pixels ignored on each side (stray specks)
MAX_FILE_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
PNG_TEXT_KEY = "sketchcolor-prepare"

# Filters and sketch checks (fractions; lengths in px at 128 px, scaled with --size).
BLANK_DIFF = 10  # /255 from white: visible at the layout render
WHITE_LEVEL = 245  # a colour pixel with every channel >= this is background
MIN_DRAWING_FRACTION = 0.02
CHROMA_COLOURFUL = 12.0
MIN_COLOURFUL_FRACTION = 0.03
GREY_KEEP_EVERY = 10
LINE_LEVEL = 128  # a sketch pixel below this is line
MIN_LINE_FRACTION = 0.005
MAX_LINE_FRACTION = 0.45
COVER_RADIUS = 2.0
MIN_COVERAGE = {"strokes": 0.6, "xdog": 0.5}
SOLID_RADIUS = 3.0
MAX_SOLID_FRACTION = 0.3
DARK_FILL_LSTAR = 30.0
DARK_FILL_CHROMA = 20.0
STROKE_LSTAR = 70.0
MIN_PAINT_OPACITY = 0.5
REGION_JOIN_DE = 5.0
REGION_MIN_AREA = 6
REGION_SOLID_SHARE = 0.1
REGION_SEAM_RADIUS = 2
REGION_SEAM_RGB = 48.0
REGION_WIDTHS = (1, 2, 3, 4)
REGION_WIDTH_WEIGHTS = (0.3, 0.35, 0.2, 0.15)
PENCIL_SIGMA = 1.0
PENCIL_SCALE = 0.09
PENCIL_GAMMA = 0.8
STYLE_THRESHOLDS = {
    "openclipart": (("strokes", 0.5), ("regions", 0.75), ("xdog", 1.0)),
    "fluent": (("strokes", 1 / 3), ("regions", 2 / 3), ("xdog", 1.0)),
    "twemoji": (("strokes", 1 / 3), ("regions", 2 / 3), ("xdog", 1.0)),
}
OPENCLIPART_DROP_FOLDERS = {
    "signs_and_symbols/flags/": "flags_folder",
    "special/gradients/": "swatch_folder",
    "special/patterns/": "swatch_folder",
}

SOURCE_INFO: dict[str, dict[str, Any]] = {
    "openmoji": {
        "package": "npm openmoji",
        "version": "17.0.0",
        "licence": "CC BY-SA 4.0",
        "licence_url": "https://creativecommons.org/licenses/by-sa/4.0/",
        "attribution": pom.ATTRIBUTION,
        "attribution_url": pom.ATTRIBUTION_URL,
        "download": "npm pack openmoji@17.0.0",
    },
    "openclipart": {
        "package": "Debian openclipart-svg",
        "version": "1:0.18+dfsg-19",
        "licence": "Public domain (Creative Commons Public Domain Dedication, per debian/copyright)",
        "licence_url": "https://creativecommons.org/licenses/publicdomain/",
        "attribution": "Open Clip Art Library (openclipart.org), 0.18, as packaged by Debian "
        "(openclipart-svg); public domain, no attribution required.",
        "attribution_url": "https://openclipart.org",
        "download": "apt-get download openclipart-svg=1:0.18+dfsg-19 && "
        "dpkg-deb -x openclipart-svg_1%3a0.18+dfsg-19_all.deb oc",
    },
    "fluent": {
        "package": "npm @iconify-json/fluent-emoji-flat",
        "version": "1.2.6",
        "licence": "MIT",
        "licence_url": "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE",
        "attribution": "Fluent Emoji (flat) by Microsoft Corporation, MIT licence, "
        "Copyright (c) Microsoft Corporation; Iconify JSON packaging (@iconify-json/fluent-emoji-flat).",
        "attribution_url": "https://github.com/microsoft/fluentui-emoji",
        "download": "npm pack @iconify-json/fluent-emoji-flat@1.2.6",
    },
    "twemoji": {
        "package": "npm @twemoji/svg",
        "version": "15.0.0",
        "licence": "CC BY 4.0 (graphics); the npm packaging is MIT (c) 2023 Samuel Kopp",
        "licence_url": "https://creativecommons.org/licenses/by/4.0/",
        "attribution": "Twemoji graphics, Copyright 2019 Twitter, Inc and other contributors "
        "(continued by jdecked/twemoji), licensed under CC-BY 4.0; from the npm package @twemoji/svg 15.0.0.",
        "attribution_url": "https://github.com/jdecked/twemoji",
        "download": "npm pack @twemoji/svg@15.0.0",
    },
}

ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)


# ------------------------------------------------------------------------------------------ hashing


def hash_int(text: str) -> int:
    """sha256 of ``text`` (UTF-8) as a non-negative integer."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


def hash_split(key: str, test_every: int = TEST_EVERY) -> str:
    """``test`` if sha256(key) % test_every == test_every - 1, else ``train``."""
    return "test" if hash_int(key) % test_every == test_every - 1 else "train"


def item_unit(source: str, stem: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by (salt, source, stem): sha256 % 1000 / 1000."""
    return (hash_int(f"{salt}{source}/{stem}") % 1000) / 1000.0


def safe_stem(text: str) -> str:
    """A file-name-safe stem: '/' becomes '__', characters outside [A-Za-z0-9._-] become '_'."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", text.replace("/", "__")).strip(".")
    return stem or "_"


# ------------------------------------------------------------------------------------------- splits

SKIN_TONES = frozenset({"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"})
SKIN_TONE_SUFFIXES = ("-medium-light", "-medium-dark", "-medium", "-light", "-dark")


def emoji_key(codepoints: str) -> str:
    """Normalise a codepoint sequence ('1f44b-1f3fd', '2764-FE0F') to its base key ('1F44B', '2764').

    Upper-case hex joined by '-', without FE0F and without the skin-tone modifiers 1F3FB..1F3FF.
    A sequence made only of those (the skin-tone swatches themselves) keeps its own upper-case form.
    """
    parts = [p.upper().lstrip("0") or "0" for p in re.split(r"[-_\s]+", codepoints.strip()) if p]
    parts = [p.zfill(4) for p in parts]
    kept = [p for p in parts if p != "FE0F" and p not in SKIN_TONES]
    return "-".join(kept or parts)


def is_flag_sequence(codepoints: str) -> bool:
    """True for a regional-indicator pair (country flag) or a 1F3F4 tag sequence (subdivision flag)."""
    parts = [int(p, 16) for p in codepoints.split("-") if p]
    if len(parts) == 2 and all(0x1F1E6 <= p <= 0x1F1FF for p in parts):
        return True
    return len(parts) > 1 and parts[0] == 0x1F3F4 and any(0xE0020 <= p <= 0xE007F for p in parts[1:])


def openmoji_key_splits(stem_splits: Mapping[str, str]) -> dict[str, str]:
    """Map each emoji key of OpenMoji's stems to its split; a key with any test stem is test."""
    out: dict[str, str] = {}
    for stem, split in stem_splits.items():
        key = emoji_key(stem)
        if out.get(key) != "test":
            out[key] = split
    return out


def emoji_split(key: str, openmoji_splits: Mapping[str, str], test_every: int = TEST_EVERY) -> str:
    """Split of an emoji key: OpenMoji's split where it has the emoji, else by hash of the key."""
    return openmoji_splits.get(key) or hash_split(key, test_every)


def fluent_key(name: str, name_to_codes: Mapping[str, str]) -> str:
    """Emoji key of a Fluent icon name via chars.json (see the module docstring)."""
    if name in name_to_codes:
        return emoji_key(name_to_codes[name])
    for suffix in SKIN_TONE_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in name_to_codes:
            return emoji_key(name_to_codes[base])
    return f"name:{name}"


def openclipart_group_key(relpath: str) -> str:
    """Near-duplicate group of an OpenClipart file: its name without folder, suffix and version."""
    stem = Path(relpath).name.lower().removesuffix(".svg")
    return re.sub(r"[_\d]+$", "", stem) or stem


# ---------------------------------------------------------------------------------------- SVG text


def parse_svg(data: bytes) -> ET.Element:
    """Parse SVG bytes with the standard library; un-namespaced documents are put in the SVG namespace.

    Raises:
        ET.ParseError: Not well-formed XML (also after decoding as UTF-8 with replacement).
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        text = data.decode("utf-8", errors="replace")
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)  # the declaration may name another encoding
        root = ET.fromstring(text)
    if root.tag == "svg":
        for el in root.iter():
            if isinstance(el.tag, str) and not el.tag.startswith("{"):
                el.tag = f"{{{SVG_NS}}}{el.tag}"
    if root.tag != f"{{{SVG_NS}}}svg":
        raise ET.ParseError(f"root element is {root.tag!r}, not svg")
    if root.get("viewBox") is None:
        # Without a view box, changing the root's size (wrap_svg) would not scale the drawing; this
        # view box maps user units to CSS px exactly as the document's own width and height do.
        w, h = length_px(root.get("width")), length_px(root.get("height"))
        if w and h:
            root.set("viewBox", f"0 0 {w:.6g} {h:.6g}")
    return root


UNIT_PX = {
    "": 1.0,
    "px": 1.0,
    "pt": 96 / 72,
    "pc": 16.0,
    "mm": 96 / 25.4,
    "cm": 96 / 2.54,
    "in": 96.0,
    "em": 16.0,
    "ex": 8.0,
}


def length_px(text: str | None) -> float | None:
    """An SVG length in CSS px (96 dpi, 16 px font), or None if missing, relative (%) or invalid."""
    m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-z]*)\s*", text or "")
    if m is None or m.group(2) not in UNIT_PX:
        return None
    value = float(m.group(1)) * UNIT_PX[m.group(2)]
    return value if value > 0 else None


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def wrap_svg(root: ET.Element, canvas: tuple[int, int], box: tuple[float, float, float], size: int) -> str:
    """Nest ``root`` drawn at ``canvas`` = (width, height) px inside a ``size`` px square showing ``box``.

    ``box`` = (x, y, side) in canvas pixels: the square view box of the outer document, so the
    drawing is cropped to it and letterboxed without stretching (an outer ``<svg>`` clips what lies
    outside). The root's own view box and aspect rule are kept, only its size and position change.
    """
    inner = copy.copy(root)  # shallow: only the root's attributes change
    inner.attrib = dict(root.attrib)
    for name in ("x", "y"):
        inner.attrib.pop(name, None)
    inner.set("width", f"{canvas[0]}")
    inner.set("height", f"{canvas[1]}")
    x, y, side = box
    outer = ET.Element(
        f"{{{SVG_NS}}}svg",
        {"width": str(size), "height": str(size), "viewBox": f"{x:.4f} {y:.4f} {side:.4f} {side:.4f}"},
    )
    outer.append(inner)
    return ET.tostring(outer, encoding="unicode")


def _parse_style(text: str | None) -> dict[str, str]:
    out = {}
    for decl in (text or "").split(";"):
        if ":" in decl:
            k, v = decl.split(":", 1)
            out[k.strip().lower()] = v.strip().removesuffix("!important").strip()
    return out


def _css_rules(root: ET.Element) -> dict[str, dict[str, str]]:
    """Simple ``<style>`` rules: selectors ``.class``, ``tag`` and comma lists of them (others ignored)."""
    rules: dict[str, dict[str, str]] = {}
    for el in root.iter(f"{{{SVG_NS}}}style"):
        css = re.sub(r"/\*.*?\*/", "", "".join(el.itertext()), flags=re.S)
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
            decls = _parse_style(body)
            for sel in selectors.split(","):
                sel = sel.strip()
                if re.fullmatch(r"\.?[A-Za-z_][\w-]*", sel):
                    rules.setdefault(sel, {}).update(decls)
    return rules


def _lch(rgb: tuple[int, ...]) -> tuple[float, float]:
    """CIE L* (0..100) and chroma C*ab of an sRGB colour given as 0..255 ints (D65)."""
    r, g, b = (
        (c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb[:3]
    )
    xyz = (
        (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
        0.2126 * r + 0.7152 * g + 0.0722 * b,
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
    )
    fx, fy, fz = (t ** (1 / 3) if t > 216 / 24389 else (t * 24389 / 27 + 16) / 116 for t in xyz)
    return 116 * fy - 16, float(np.hypot(500 * (fx - fy), 200 * (fy - fz)))


def _parse_float(text: str | None, default: float) -> float:
    try:
        return float(re.match(r"\s*([-+]?[\d.]+(?:e[-+]?\d+)?)", text or "", re.I).group(1))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return default


class _Paint:
    """Resolves SVG paint values to a lightness (or None for no paint) for the dark-path rule."""

    def __init__(self, root: ET.Element):
        self.by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
        self.rules = _css_rules(root)

    def props(self, el: ET.Element) -> dict[str, str]:
        """Own declarations of ``el``: presentation attributes < CSS rules (tag, class) < style."""
        out = {k: v for k, v in el.attrib.items() if not k.startswith("{")}
        out.update(self.rules.get(_local(el.tag), {}))
        for cls in (el.get("class") or "").split():
            out.update(self.rules.get(f".{cls}", {}))
        out.update(_parse_style(el.get("style")))
        return out

    def gradient_stops(self, el: ET.Element, depth: int = 0) -> list[ET.Element]:
        stops = [s for s in el if _local(s.tag) == "stop"]
        href = el.get(f"{{{XLINK_NS}}}href") or el.get("href")
        if not stops and href and href.startswith("#") and depth < 8 and href[1:] in self.by_id:
            return self.gradient_stops(self.by_id[href[1:]], depth + 1)
        return stops

    def lch(self, value: str | None, current: str) -> tuple[float, float] | None:
        """(L*, C*) of a paint (means over gradient stops), or None for none/unknown/pattern paint."""
        if value is None:
            return None
        value = value.strip()
        if value.startswith("url("):
            ref = re.match(r"url\(\s*['\"]?#([^)'\"]+)['\"]?\s*\)", value)
            target = self.by_id.get(ref.group(1)) if ref else None
            if target is None or "Gradient" not in _local(target.tag):
                return None
            stops = []
            for stop in self.gradient_stops(target):
                p = self.props(stop)
                if _parse_float(p.get("stop-opacity"), 1.0) < MIN_PAINT_OPACITY:
                    continue
                val = self.lch(p.get("stop-color", "black"), current)
                if val is not None:
                    stops.append(val)
            if not stops:
                return None
            return float(np.mean([v[0] for v in stops])), float(np.mean([v[1] for v in stops]))
        if value in ("none", "transparent", ""):
            return None
        if value == "currentColor":
            value = current
        try:
            return _lch(ImageColor.getrgb(value))
        except ValueError:
            return None


def is_near_black(lightness: float, chroma: float) -> bool:
    """Near-black paint: CIE L* < DARK_FILL_LSTAR and chroma < DARK_FILL_CHROMA (not dark purple/navy)."""
    return lightness < DARK_FILL_LSTAR and chroma < DARK_FILL_CHROMA


SHAPES = frozenset({"path", "rect", "circle", "ellipse", "line", "polyline", "polygon"})
HIDDEN = frozenset({"text", "image", "foreignObject", "flowRoot"})
UNTOUCHED = frozenset({"clipPath", "mask", "marker", "pattern", "style", "metadata"})
INHERITED = ("fill", "stroke", "fill-opacity", "stroke-opacity", "stroke-width", "color")


def dark_paths_svg(root: ET.Element, dark_fills: bool) -> tuple[ET.Element, int]:
    """Rewrite an SVG into black ink on white paint (style ``strokes``; rule in the module docstring).

    Every visible paint (opacity >= MIN_PAINT_OPACITY, not under a filter) becomes black if it is
    ink, white otherwise: strokes are ink if their L* < STROKE_LSTAR, fills (only with
    ``dark_fills``) if they are near-black (:func:`is_near_black`). Painting the rest white rather than removing it
    keeps the occlusion of the picture, so a black shape drawn under coloured ones (the usual way
    clip art draws outlines) shows only where it shows in the colour picture. Text, images and
    filtered elements are hidden; faint paints are removed.

    Args:
        root: Parsed SVG (left unchanged).
        dark_fills: Whether near-black fills are ink (OpenClipart) or only strokes are (emoji).

    Returns:
        The rewritten copy of ``root`` and the number of shapes painted with ink.
    """
    root = copy.deepcopy(root)
    paint = _Paint(root)
    inked = 0

    def recolour(lch: tuple[float, float] | None, alpha: float, blocked: bool, ink: bool) -> str:
        if blocked or lch is None or alpha < MIN_PAINT_OPACITY:
            return "none"
        return "#000000" if ink else "#ffffff"

    def visit(el: ET.Element, inherited: dict[str, str], opacity: float, filtered: bool) -> None:
        nonlocal inked
        name = _local(el.tag)
        if name in UNTOUCHED:
            return
        own = paint.props(el)
        if name in HIDDEN:
            el.set("style", "display:none")
            return
        state = dict(inherited)
        state.update({k: own[k] for k in INHERITED if k in own})
        opacity *= min(1.0, max(0.0, _parse_float(own.get("opacity"), 1.0)))
        filtered = filtered or own.get("filter", "none") not in ("none", "")
        if name in SHAPES:
            current = state.get("color", "black")
            fill_lch = paint.lch(state.get("fill", "black"), current)
            fill = recolour(
                fill_lch,
                opacity * _parse_float(state.get("fill-opacity"), 1.0),
                filtered,
                dark_fills and fill_lch is not None and is_near_black(*fill_lch),
            )
            stroke_lch = paint.lch(state.get("stroke", "none"), current)
            stroke = recolour(
                stroke_lch,
                opacity * _parse_float(state.get("stroke-opacity"), 1.0),
                filtered or _parse_float(state.get("stroke-width"), 1.0) <= 0,
                stroke_lch is not None and stroke_lch[0] < STROKE_LSTAR,
            )
            decls = _parse_style(el.get("style"))
            decls.update(
                {"fill": fill, "stroke": stroke, "fill-opacity": "1", "stroke-opacity": "1", "filter": "none"}
            )
            el.set("style", ";".join(f"{k}:{v}" for k, v in decls.items()))
            inked += fill == "#000000" or stroke == "#000000"
        for child in el:
            visit(child, state, opacity, filtered)

    visit(root, {}, 1.0, False)
    return root, inked


# ---------------------------------------------------------------------------------------- rendering


def render_svg(svg: str, width: int, height: int) -> np.ndarray:
    """Render SVG text with resvg, fitted (aspect kept) into width x height: (h, w, 4) uint8 RGBA."""
    import resvg_py

    png = resvg_py.svg_to_bytes(
        svg_string=svg, width=width, height=height, skip_system_fonts=True, dpi=96.0
    )  # dpi: without it resvg 0.48 rejects physical units (mm, pt) as "invalid size"
    with Image.open(io.BytesIO(bytes(png))) as im:
        return np.asarray(im.convert("RGBA"))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) straight-alpha uint8 -> (h, w, 3) uint8 composited onto opaque white."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def crop_box(
    rgb: np.ndarray, margin: float = CROP_MARGIN, trim: float = CROP_TRIM
) -> tuple[float, float, float]:
    """Square box (x, y, side) around the non-white pixels of ``rgb``, in its pixel coordinates.

    ``trim`` of the drawing pixels is ignored on each side (specks far away); ``margin`` of the side
    is added on each side. Raises ValueError when no pixel differs from white.
    """
    mask = (255 - rgb.astype(np.int16)).max(axis=-1) > BLANK_DIFF
    if not mask.any():
        raise ValueError("blank")
    bounds = []
    for axis in (0, 1):  # 0: columns (x), 1: rows (y)
        profile = mask.sum(axis=axis).astype(np.float64)
        cum = np.cumsum(profile) / profile.sum()
        lo = int(np.searchsorted(cum, trim, side="right"))
        hi = int(np.searchsorted(cum, 1.0 - trim, side="left")) + 1
        bounds.append((lo, max(hi, lo + 1)))
    (x0, x1), (y0, y1) = bounds
    side = max(x1 - x0, y1 - y0) / (1.0 - 2.0 * margin)
    return (x0 + x1) / 2.0 - side / 2.0, (y0 + y1) / 2.0 - side / 2.0, side


# ------------------------------------------------------------------------------------------ sketches


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb.astype(np.float64) / 255.0)


def segment_regions(
    rgb: np.ndarray, join_de: float = REGION_JOIN_DE, min_area: int = REGION_MIN_AREA
) -> tuple[np.ndarray, np.ndarray]:
    """Label the flat colour regions of an (h, w, 3) uint8 picture and find its thin lines.

    4-neighbours closer than ``join_de`` (CIE76) are joined, so gradients stay one region. Slivers
    (regions where under REGION_SOLID_SHARE of the pixels have their whole 3x3 neighbourhood in the
    region, or under ``min_area`` pixels) are then given to the nearest pixel of a remaining region.
    A sliver pixel is either an anti-aliasing seam, whose colour lies (within REGION_SEAM_RGB) on the
    segment between the colours of two regions near it (or near the one region around it), or a
    thin drawn line (a 1-2 px outline, a straw): those pixels are returned as ``thin``.

    Returns:
        ``labels`` (h, w) int and ``thin`` (h, w) bool (connected groups under 4 px removed).
    """
    from scipy.ndimage import distance_transform_edt
    from scipy.ndimage import label as connected
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = rgb.shape[:2]
    lab = _lab(rgb)
    idx = np.arange(h * w).reshape(h, w)
    src, dst = [], []
    for a, b in (
        ((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
        ((slice(0, -1),), (slice(1, None),)),
    ):
        close = np.linalg.norm(lab[a] - lab[b], axis=-1) < join_de
        src.append(idx[a][close])
        dst.append(idx[b][close])
    s, d = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(s), dtype=np.int8), (s, d)), shape=(h * w, h * w))
    _, labels = connected_components(graph, directed=False)
    labels = labels.reshape(h, w)

    padded = np.pad(labels, 1, mode="edge")
    solid = np.ones((h, w), dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            solid &= padded[dy : dy + h, dx : dx + w] == labels
    area = np.bincount(labels.ravel())
    solid_area = np.bincount(labels[solid], minlength=len(area))
    thick = (solid_area >= np.maximum(1, REGION_SOLID_SHARE * area)) & (area >= min_area)
    keep = thick[labels]
    thin = np.zeros((h, w), dtype=bool)
    if not keep.any():
        return labels, thin

    r = REGION_SEAM_RADIUS
    near = np.pad(np.where(keep, labels, -1), r, constant_values=-1)
    colours = np.pad(rgb.astype(np.float64), ((r, r), (r, r), (0, 0)))
    for y, x in zip(*np.nonzero(~keep), strict=True):
        window = near[y : y + 2 * r + 1, x : x + 2 * r + 1]
        found = np.unique(window[window >= 0])
        if found.size == 0:
            continue
        win_rgb = colours[y : y + 2 * r + 1, x : x + 2 * r + 1]
        local = [win_rgb[window == k].mean(axis=0) for k in found]
        c = rgb[y, x].astype(np.float64)
        if len(local) == 1:
            dist = float(np.linalg.norm(c - local[0]))
        else:
            dist = min(
                _segment_distance(c, local[i], local[j])
                for i in range(len(local))
                for j in range(i + 1, len(local))
            )
        thin[y, x] = dist > REGION_SEAM_RGB
    groups, n = connected(thin, structure=np.ones((3, 3), dtype=bool))
    if n:
        sizes = np.bincount(groups.ravel())
        thin &= sizes[groups] >= 4
    _, (iy, ix) = distance_transform_edt(~keep, return_indices=True)
    return labels[iy, ix], thin


def _segment_distance(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance from point ``c`` to the segment [a, b]."""
    ab = b - a
    t = float(np.clip(np.dot(c - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(c - (a + t * ab)))


def region_boundaries(labels: np.ndarray, width: int) -> np.ndarray:
    """(h, w) bool: pixels whose right or lower neighbour has another label, dilated to ``width`` px."""
    from scipy.ndimage import binary_dilation

    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    if width > 1:
        edge = binary_dilation(edge, structure=np.ones((width, width), dtype=bool))
    return edge


def sketch_regions(rgb: np.ndarray, width: int) -> np.ndarray:
    """Style ``regions``: region boundaries ``width`` px wide plus thin lines, black on white (uint8)."""
    labels, thin = segment_regions(rgb)
    return np.where(region_boundaries(labels, width) | thin, 0, 255).astype(np.uint8)


def sketch_xdog(rgb: np.ndarray, seed: int, scale: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Style ``xdog``: sketchcolor.data.xdog with parameters drawn from a generator seeded by ``seed``."""
    import dataclasses

    import torch

    from sketchcolor.data import XDoGParams, xdog

    params = XDoGParams.random(torch.Generator().manual_seed(seed), scale=scale)
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    e = xdog(x, params)[0, 0].numpy()
    out = np.clip(np.rint(e * 255.0), 0, 255).astype(np.uint8)
    return out, {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(params).items()}


def sketch_pencil(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Held-out style ``pencil``: soft grey lines from the gradient magnitude of blurred lightness."""
    from scipy.ndimage import gaussian_filter, sobel

    lightness = _lab(rgb)[..., 0] / 100.0
    blurred = gaussian_filter(lightness, PENCIL_SIGMA * scale, mode="nearest")
    # Sobel sums 4 weighted differences two pixels apart: /8 makes it a per-pixel slope.
    mag = np.hypot(sobel(blurred, axis=0, mode="nearest"), sobel(blurred, axis=1, mode="nearest")) / 8.0
    dark = np.clip(mag * scale / PENCIL_SCALE, 0.0, 1.0) ** PENCIL_GAMMA
    return np.clip(np.rint(255.0 * (1.0 - dark)), 0, 255).astype(np.uint8)


def normalise_darkness(grey: np.ndarray, max_gain: float = 4.0) -> np.ndarray:
    """Darken faint lines: gain so the 90th percentile of line darkness (> 0.1) becomes black."""
    dark = 1.0 - grey.astype(np.float64) / 255.0
    lines = dark[dark > 0.1]
    if lines.size == 0:
        return grey
    gain = float(np.clip(1.0 / max(np.quantile(lines, 0.9), 1e-6), 1.0, max_gain))
    return np.clip(np.rint(255.0 * (1.0 - np.clip(dark * gain, 0.0, 1.0))), 0, 255).astype(np.uint8)


def drawing_mask(rgb: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels of the colour picture that are not background white."""
    return (rgb < WHITE_LEVEL).any(axis=-1)


def sketch_problem(sketch: np.ndarray, scale: float) -> str | None:
    """Why a sketch is unusable, or None if it is usable (every style, the held-out one too).

    ``too_few_lines``: under MIN_LINE_FRACTION of the canvas is line (L < LINE_LEVEL);
    ``too_dark``: over MAX_LINE_FRACTION is; ``too_solid``: over MAX_SOLID_FRACTION of the line
    pixels lie deeper than SOLID_RADIUS * scale px inside the line area (filled silhouettes,
    lines so wide that they merge).
    """
    line = sketch < LINE_LEVEL
    if line.mean() < MIN_LINE_FRACTION:
        return "too_few_lines"
    if line.mean() > MAX_LINE_FRACTION:
        return "too_dark"
    if solid_fraction(sketch, SOLID_RADIUS * scale) > MAX_SOLID_FRACTION:
        return "too_solid"
    return None


def solid_fraction(sketch: np.ndarray, radius: float) -> float:
    """Fraction of line pixels deeper than ``radius`` px inside the line area (solid ink, not lines)."""
    from scipy.ndimage import binary_erosion

    line = sketch < LINE_LEVEL
    if not line.any():
        return 0.0
    r = max(1, int(round(radius)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return float(binary_erosion(line, structure=xx**2 + yy**2 <= r * r).sum() / line.sum())


def assess_sketch(
    style: str, sketch: np.ndarray, edges: np.ndarray, scale: float
) -> tuple[str | None, dict[str, float]]:
    """Check a synthesised sketch: (problem or None, measured values); rules in the module docstring."""
    problem = sketch_problem(sketch, scale)
    info: dict[str, float] = {}
    if style in MIN_COVERAGE:
        info["coverage"] = round(edge_coverage(sketch, edges, COVER_RADIUS * scale), 3)
        if problem is None and info["coverage"] < MIN_COVERAGE[style]:
            problem = "misses_edges"
    return problem, info


def edge_coverage(sketch: np.ndarray, edges: np.ndarray, radius: float) -> float:
    """Fraction of ``edges`` pixels within ``radius`` px of a line pixel of ``sketch``."""
    from scipy.ndimage import distance_transform_edt

    line = sketch < LINE_LEVEL
    if not edges.any():
        return 1.0
    if not line.any():
        return 0.0
    return float((distance_transform_edt(~line)[edges] <= radius).mean())


def colour_problem(rgb: np.ndarray) -> tuple[str | None, dict[str, float]]:
    """Check a colour picture: ('nearly_empty' | 'greyscale' | None, stats)."""
    drawing = drawing_mask(rgb)
    frac = float(drawing.mean())
    stats = {"drawing_fraction": round(frac, 4)}
    if frac < MIN_DRAWING_FRACTION:
        return "nearly_empty", stats
    lab = _lab(rgb)
    chroma = np.hypot(lab[..., 1], lab[..., 2])[drawing]
    colourful = float((chroma > CHROMA_COLOURFUL).mean())
    stats["colourful_fraction"] = round(colourful, 4)
    return ("greyscale" if colourful < MIN_COLOURFUL_FRACTION else None), stats


def choose_style(source: str, stem: str) -> str:
    """The sketch style drawn for an item (module docstring: "Sketches")."""
    u = item_unit(source, stem)
    for style, upper in STYLE_THRESHOLDS[source]:
        if u < upper:
            return style
    return STYLE_THRESHOLDS[source][-1][0]


def fallbacks(source: str, stem: str, style: str) -> tuple[str, ...]:
    """Styles tried, in order, when ``style`` gives an unusable sketch (module docstring)."""
    if style == "strokes":  # balanced between the other two styles by a second hash
        return ("regions", "xdog") if item_unit(source, stem, salt="fallback:") < 0.5 else ("xdog", "regions")
    return {"regions": ("xdog",), "xdog": ("regions",)}[style]


def region_width(source: str, stem: str, size: int) -> int:
    """Line width in px of style ``regions`` for an item: w in REGION_WIDTHS at 128 px, scaled."""
    cumulative = np.cumsum(REGION_WIDTH_WEIGHTS)
    index = min(
        int(np.searchsorted(cumulative, item_unit(source, stem, salt="width:"), side="right")),
        len(REGION_WIDTHS) - 1,
    )
    return max(1, round(REGION_WIDTHS[index] * size / 128))


# -------------------------------------------------------------------------------------- one item


def _save_png(image: Image.Image, path: Path, text: Mapping[str, str] | None = None) -> None:
    """Atomic PNG write as in prepare_openmoji.save_atomic, optionally with text chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(k, v)
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def item_paths(out: Path, source: str, split: str, stem: str) -> tuple[Path, Path]:
    """(sketch, colour) output paths of an item."""
    if split == "train":
        return (
            out / "train" / "sketch" / source / f"{stem}.png",
            out / "train" / "color" / source / f"{stem}.png",
        )
    return out / "test" / source / "sketch" / f"{stem}.png", out / "test" / source / "color" / f"{stem}.png"


def dropped_marker(out: Path, source: str, stem: str) -> Path:
    return out / ".dropped" / source / f"{stem}.json"


def _previous_record(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of an item finished by an earlier run under the same rules, or None."""
    out, source, stem = Path(job["out"]), job["source"], job["stem"]
    sketch_path, colour_path = item_paths(out, source, job["split"], stem)
    marker = dropped_marker(out, source, stem)
    if marker.is_file():
        try:
            rec = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if rec.get("rules_version") == RULES_VERSION and rec.get("size") == job["size"]:
            return rec
        return None
    if not (sketch_path.is_file() and colour_path.is_file()):
        return None
    if source == "openmoji":
        return {"source": source, "stem": stem, "split": job["split"], "status": "kept", "style": "openmoji"}
    try:
        with Image.open(sketch_path) as im:
            rec = json.loads(im.text.get(PNG_TEXT_KEY, "{}"))  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None
    if rec.get("rules_version") != RULES_VERSION or rec.get("size") != job["size"]:
        return None
    return rec


def load_svg_bytes(job: Mapping[str, Any]) -> bytes:
    if job.get("svg") is not None:
        return job["svg"].encode("utf-8")
    return Path(job["path"]).read_bytes()


def synthesise(job: Mapping[str, Any]) -> dict[str, Any]:
    """Render and check one non-OpenMoji item; returns its record (status kept or dropped) and arrays.

    The returned dict has ``record`` (JSON-able) and, for kept items, ``sketch`` and ``color``.
    """
    source, stem, size = job["source"], job["stem"], job["size"]
    scale = size / 128.0
    rec: dict[str, Any] = {
        "source": source,
        "stem": stem,
        "split": job["split"],
        "size": size,
        "rules_version": RULES_VERSION,
    }

    def drop(reason: str, **extra: Any) -> dict[str, Any]:
        rec.update(status="dropped", reason=reason, **extra)
        return {"record": rec}

    data = load_svg_bytes(job)
    try:
        root = parse_svg(data)
    except ET.ParseError as exc:
        return drop("xml_parse_failed", error=str(exc)[:200])
    try:
        layout = composite_on_white(
            render_svg(ET.tostring(root, encoding="unicode"), LAYOUT_SIZE, LAYOUT_SIZE)
        )
        try:
            box = crop_box(layout)
        except ValueError:
            return drop("blank")
        canvas = (layout.shape[1], layout.shape[0])
        color = composite_on_white(render_svg(wrap_svg(root, canvas, box, size), size, size))
        if color.shape[:2] != (size, size):
            raise ValueError(f"rendered {color.shape[1]}x{color.shape[0]}, wanted {size}x{size}")
    except Exception as exc:  # resvg raises ValueError on broken files; keep the message
        return drop("render_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    problem, stats = colour_problem(color)
    rec["stats"] = stats
    if problem == "nearly_empty":
        return drop(problem)
    if problem == "greyscale":
        if hash_int(f"grey:{source}/{stem}") % GREY_KEEP_EVERY != 0:
            return drop(problem)
        rec["greyscale_kept"] = True

    labels, thin = segment_regions(color)
    edges = region_boundaries(labels, 1) | thin

    def make(style: str) -> tuple[np.ndarray | None, str | None, dict[str, Any]]:
        if style == "strokes":
            rewritten, inked = dark_paths_svg(root, dark_fills=source == "openclipart")
            if inked == 0:
                return None, "no_ink", {}
            grey = composite_on_white(render_svg(wrap_svg(rewritten, canvas, box, size), size, size))
            sketch = normalise_darkness(grey.min(axis=-1))
            return (sketch, *assess_sketch(style, sketch, edges, scale))
        if style == "regions":
            chosen_width = region_width(source, stem, size)
            # Lines too wide for a thin drawing merge into blobs: try narrower ones before giving up.
            for width in range(chosen_width, 0, -1):
                sketch = np.where(region_boundaries(labels, width) | thin, 0, 255).astype(np.uint8)
                problem, info = assess_sketch(style, sketch, edges, scale)
                if problem not in ("too_dark", "too_solid"):
                    break
            if width != chosen_width:
                info["width_drawn"] = chosen_width
            return sketch, problem, {"width": width, **info}
        sketch, params = sketch_xdog(color, hash_int(f"xdog:{source}/{stem}") % (2**63), scale)
        problem, info = assess_sketch(style, sketch, edges, scale)
        return sketch, problem, {"xdog": params, **info}

    chosen = choose_style(source, stem)
    # The strokes test runs for every item, so the manifest can say how often it is usable.
    strokes = make("strokes")
    rec["strokes_check"] = strokes[1] or "usable"
    tried = []
    for style in (chosen, *fallbacks(source, stem, chosen)):
        sketch, problem, info = strokes if style == "strokes" else make(style)
        if problem is None:
            break
        tried.append(f"{style}:{problem}")
    else:
        return drop("sketch_unusable", tried=tried)
    rec.update(status="kept", style=style, chosen=chosen, fallbacks=tried, params=info)
    return {"record": rec, "sketch": sketch, "color": color}


def process_item(job: Mapping[str, Any]) -> dict[str, Any]:
    """Worker entry: render one item (or reuse an earlier run's files); returns its record."""
    t0 = time.perf_counter()
    previous = _previous_record(job)
    if previous is not None:
        previous["resumed"] = True
        return previous
    out, source, stem, split, size = Path(job["out"]), job["source"], job["stem"], job["split"], job["size"]
    sketch_path, colour_path = item_paths(out, source, split, stem)
    if source == "openmoji":  # exactly prepare_openmoji.render_item's images, in this layout
        root = Path(job["path"])
        try:
            line = pom.render_on_white(root / "black" / "svg" / f"{stem}.svg", size)
            rgb = pom.render_on_white(root / "color" / "svg" / f"{stem}.svg", size)
        except Exception as exc:
            return {
                "source": source,
                "stem": stem,
                "split": split,
                "status": "dropped",
                "reason": "render_failed",
                "error": f"{type(exc).__name__}: {exc}"[:200],
            }
        pom.save_atomic(Image.fromarray(line, "RGB").convert("L"), sketch_path)
        pom.save_atomic(Image.fromarray(rgb, "RGB"), colour_path)
        return {
            "source": source,
            "stem": stem,
            "split": split,
            "status": "kept",
            "style": "openmoji",
            "seconds": round(time.perf_counter() - t0, 3),
        }
    result = synthesise(job)
    rec = result["record"]
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    marker = dropped_marker(out, source, stem)
    if rec["status"] == "kept":
        _save_png(Image.fromarray(result["color"], "RGB"), colour_path)
        _save_png(Image.fromarray(result["sketch"], "L"), sketch_path, {PNG_TEXT_KEY: json.dumps(rec)})
        marker.unlink(missing_ok=True)
    else:
        _write_json_atomic(marker, rec)
        for path in (sketch_path, colour_path):  # kept by an earlier run under other rules
            path.unlink(missing_ok=True)
    return rec


# ---------------------------------------------------------------------------------- worker pool


def _worker_loop(conn: multiprocessing.connection.Connection) -> None:
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(process_item(job))
        except Exception as exc:  # a bug in one item must not stop the run; it is reported
            conn.send(
                {
                    "source": job["source"],
                    "stem": job["stem"],
                    "split": job["split"],
                    "status": "dropped",
                    "reason": "render_failed",
                    "error": f"{type(exc).__name__}: {exc}"[:200],
                }
            )


def run_jobs(jobs: list[dict[str, Any]], workers: int, timeout: float) -> Iterator[dict[str, Any]]:
    """Run ``process_item`` over ``jobs`` in ``workers`` processes, killing any item over ``timeout`` s.

    A killed or crashed worker is replaced and its item is reported as ``render_timeout`` /
    ``render_failed``; results come in completion order.
    """
    if workers == 1 and timeout <= 0:
        yield from map(process_item, jobs)
        return
    ctx = multiprocessing.get_context("spawn")

    def start() -> tuple[Any, Any]:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_loop, args=(child,), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    pool = [start() for _ in range(min(workers, max(len(jobs), 1)))]
    busy: dict[int, tuple[dict[str, Any], float]] = {}
    pending = iter(jobs)
    remaining = len(jobs)

    def feed(i: int) -> None:
        job = next(pending, None)
        if job is not None:
            pool[i][1].send(job)
            busy[i] = (job, time.monotonic())

    try:
        for i in range(len(pool)):
            feed(i)
        while remaining:
            ready = multiprocessing.connection.wait([pool[i][1] for i in busy], timeout=1.0)
            now = time.monotonic()
            for i in list(busy):
                proc, conn = pool[i]
                job, started = busy[i]
                result = None
                if conn in ready:
                    try:
                        result = conn.recv()
                    except EOFError:
                        result = {"status": "dropped", "reason": "render_failed", "error": "worker crashed"}
                elif now - started > timeout:
                    result = {
                        "status": "dropped",
                        "reason": "render_timeout",
                        "error": f"over {timeout:g} s",
                    }
                if result is None:
                    continue
                if (
                    result.get("reason") in ("render_timeout",)
                    or not proc.is_alive()
                    or result.get("error") == "worker crashed"
                ):
                    proc.kill()
                    proc.join()
                    pool[i] = start()
                    result = {"source": job["source"], "stem": job["stem"], "split": job["split"], **result}
                    if job["source"] != "openmoji":
                        for path in item_paths(Path(job["out"]), job["source"], job["split"], job["stem"]):
                            path.unlink(missing_ok=True)
                        _write_json_atomic(
                            dropped_marker(Path(job["out"]), job["source"], job["stem"]),
                            {**result, "size": job["size"], "rules_version": RULES_VERSION},
                        )
                del busy[i]
                remaining -= 1
                yield result
                feed(i)
    finally:
        for _, conn in pool:
            try:
                conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for proc, _ in pool:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


# ------------------------------------------------------------------------------------------ sources


def _read_tar_members(
    tarball: Path, wanted: Iterable[str] | None = None, suffix: str | None = None
) -> dict[str, bytes]:
    """Regular files of a tarball (by exact name or by suffix), read without extracting."""
    names = set(wanted or ())
    out = {}
    with tarfile.open(tarball, "r:*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            if member.name in names or (suffix is not None and member.name.endswith(suffix)):
                fh = tf.extractfile(member)
                if fh is not None:
                    out[member.name] = fh.read()
    return out


def list_twemoji(
    tarball: Path, openmoji_splits: Mapping[str, str]
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Twemoji items (stem = the file's codepoints), drop counts and package info."""
    files = _read_tar_members(tarball, ["package/package.json"], suffix=".svg")
    package = json.loads(files.pop("package/package.json", b"{}"))
    dropped = Counter({"flag_sequence": 0})
    items = []
    for name in sorted(files):
        codes = Path(name).stem
        if is_flag_sequence(codes):
            dropped["flag_sequence"] += 1
            continue
        key = emoji_key(codes)
        items.append(
            {
                "source": "twemoji",
                "stem": safe_stem(codes),
                "key": key,
                "split": emoji_split(key, openmoji_splits),
                "svg": files[name].decode("utf-8"),
            }
        )
    return (
        items,
        dict(dropped),
        {"name": package.get("name"), "version": package.get("version"), "files": len(files)},
    )


def fluent_svg(icon: Mapping[str, Any], width: int, height: int) -> str:
    """The SVG document of one Iconify icon: its body in a view box of the icon's size."""
    w, h = icon.get("width", width), icon.get("height", height)
    left, top = icon.get("left", 0), icon.get("top", 0)
    return (
        f'<svg xmlns="{SVG_NS}" xmlns:xlink="{XLINK_NS}" width="{w}" height="{h}" '
        f'viewBox="{left} {top} {w} {h}">{icon["body"]}</svg>'
    )


def list_fluent(
    tarball: Path, openmoji_splits: Mapping[str, str]
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Fluent items (stem = the Iconify icon name; aliases ignored), drop counts and package info."""
    names = ["package/icons.json", "package/chars.json", "package/package.json"]
    files = _read_tar_members(tarball, names)
    missing = [n for n in names if n not in files]
    if missing:
        raise SystemExit(
            f"error: {tarball} lacks {', '.join(missing)} (is it @iconify-json/fluent-emoji-flat?)"
        )
    icons = json.loads(files["package/icons.json"])
    chars = json.loads(files["package/chars.json"])
    package = json.loads(files["package/package.json"])
    name_to_codes = {}
    for codes, name in sorted(chars.items()):
        name_to_codes.setdefault(name, codes)
    dropped = Counter({"flag_sequence": 0})
    items = []
    key_rules = Counter()
    for name in sorted(icons["icons"]):
        key = fluent_key(name, name_to_codes)
        key_rules[
            "chars.json"
            if name in name_to_codes
            else ("name_hash" if key.startswith("name:") else "base_name")
        ] += 1
        if name in name_to_codes and is_flag_sequence(name_to_codes[name]):
            dropped["flag_sequence"] += 1
            continue
        svg = fluent_svg(icons["icons"][name], icons.get("width", 16), icons.get("height", 16))
        items.append(
            {
                "source": "fluent",
                "stem": safe_stem(name),
                "key": key,
                "split": emoji_split(key, openmoji_splits),
                "svg": svg,
            }
        )
    info = {
        "name": package.get("name"),
        "version": package.get("version"),
        "icons": len(icons["icons"]),
        "emoji_key_from": dict(key_rules),
    }
    return items, dict(dropped), info


def _extract_deb_data(deb: Path, dest: Path) -> Path:
    """Unpack a .deb's data.tar.* (an ar archive member) into ``dest``; return the openclipart svg dir."""
    with open(deb, "rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise SystemExit(f"error: {deb} is not a .deb (ar) archive")
        while header := fh.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            data = fh.read(size)
            fh.read(size % 2)
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                    tf.extractall(dest, filter="data")
                return dest / "usr" / "share" / "openclipart" / "svg"
    raise SystemExit(f"error: {deb} has no data.tar member")


def list_openclipart(svg_dir: Path) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]:
    """OpenClipart items (stem = relative path made file-name-safe), drop counts and info."""
    paths = sorted(p for p in svg_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".svg")
    dropped = Counter(
        {
            "flags_folder": 0,
            "swatch_folder": 0,
            "duplicate_content": 0,
            "file_too_large": 0,
            "embedded_raster": 0,
        }
    )
    seen: dict[str, str] = {}
    stems: set[str] = set()
    items = []
    for path in paths:
        rel = path.relative_to(svg_dir).as_posix()
        folder = next(
            (reason for prefix, reason in OPENCLIPART_DROP_FOLDERS.items() if rel.startswith(prefix)), None
        )
        if folder:
            dropped[folder] += 1
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            dropped["file_too_large"] += 1
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            dropped["duplicate_content"] += 1
            continue
        seen[digest] = rel
        if b"<image" in data or b":image" in data:
            dropped["embedded_raster"] += 1
            continue
        stem = safe_stem(rel.removesuffix(".svg"))
        if stem in stems:  # only if sanitising made two names equal
            stem = f"{stem}-{digest[:8]}"
        stems.add(stem)
        key = openclipart_group_key(rel)
        items.append(
            {
                "source": "openclipart",
                "stem": stem,
                "key": key,
                "relpath": rel,
                "split": hash_split(key),
                "path": str(path),
            }
        )
    return items, dict(dropped), {"files": len(paths)}


def list_openmoji(root: Path, workers: int) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]:
    """OpenMoji items with prepare_openmoji.py's keep rule and by-drawing split (unchanged)."""
    kept, excluded = pom.select_stems(root)
    jobs = [(str(root), s) for s in kept]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            keys = dict(pool.imap_unordered(pom.sketch_key, jobs, chunksize=16))
    else:
        keys = dict(map(pom.sketch_key, jobs))
    splits = pom.assign_splits(kept, TEST_EVERY, keys)
    package = (
        json.loads((root / "package.json").read_text(encoding="utf-8"))
        if (root / "package.json").is_file()
        else {}
    )
    items = [
        {"source": "openmoji", "stem": s, "key": emoji_key(s), "split": splits[s], "path": str(root)}
        for s in kept
    ]
    info = {
        "name": package.get("name"),
        "version": package.get("version"),
        "distinct_sketches": len(set(keys.values())),
        "split_rule": pom.SPLIT_RULES["sketch"].format(k=TEST_EVERY, km1=TEST_EVERY - 1),
    }
    return items, excluded, info


# ------------------------------------------------------------------------------------------ pencil


def make_pencil(
    out: Path, source: str, records: list[dict[str, Any]], keys: Mapping[str, str], size: int, cap: int
) -> list[str]:
    """Write the held-out pencil subset of one source; returns the stems written (in order).

    Kept test items in ``sha256("pencil:" + source/stem)`` order, at most one per key (emoji key
    or OpenClipart group: no two skin tones of one emoji), the first ``cap`` with a usable sketch.
    """
    test = sorted(
        (r["stem"] for r in records if r["status"] == "kept" and r["split"] == "test"),
        key=lambda s: (hash_int(f"pencil:{source}/{s}"), s),
    )
    written: list[str] = []
    used: set[str] = set()
    for stem in test:
        if len(written) >= cap:
            break
        if keys.get(stem, stem) in used:
            continue
        sketch_path = out / "test" / "pencil" / "sketch" / f"{source}-{stem}.png"
        colour_path = out / "test" / "pencil" / "color" / f"{source}-{stem}.png"
        src_colour = item_paths(out, source, "test", stem)[1]
        stamp = json.dumps({"style": HELD_OUT_STYLE, "rules_version": RULES_VERSION, "size": size})
        if not (colour_path.is_file() and _png_text(sketch_path) == stamp):
            with Image.open(src_colour) as im:
                rgb = np.asarray(im.convert("RGB"))
            sketch = sketch_pencil(rgb, size / 128.0)
            if sketch_problem(sketch, size / 128.0) is not None:
                continue
            tmp = colour_path.with_name(f".{colour_path.name}.{os.getpid()}.tmp")
            colour_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_colour, tmp)
            os.replace(tmp, colour_path)
            _save_png(Image.fromarray(sketch, "L"), sketch_path, {PNG_TEXT_KEY: stamp})
        used.add(keys.get(stem, stem))
        written.append(stem)
    # Pencil pictures of this source left by an earlier run with another selection.
    chosen = {f"{source}-{s}.png" for s in written}
    for folder in ("sketch", "color"):
        for path in (out / "test" / "pencil" / folder).glob(f"{source}-*.png"):
            if path.name not in chosen:
                path.unlink()
    return written


def _png_text(path: Path) -> str | None:
    """The PNG_TEXT_KEY text of a PNG, or None if the file is missing or has none."""
    try:
        with Image.open(path) as im:
            return im.text.get(PNG_TEXT_KEY)  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None


def remove_stale_files(out: Path, source: str, kept: Mapping[str, str]) -> int:
    """Delete outputs of ``source`` that are not kept items of their split (left by earlier runs)."""
    removed = 0
    folders = {
        "train": (out / "train" / "sketch" / source, out / "train" / "color" / source),
        "test": (out / "test" / source / "sketch", out / "test" / source / "color"),
    }
    for split, dirs in folders.items():
        for folder in dirs:
            for path in folder.glob("*.png"):
                if kept.get(path.stem) != split:
                    path.unlink()
                    removed += 1
    return removed


# --------------------------------------------------------------------------------------------- main


def data_digest(names: Iterable[str], size: int) -> str:
    """sha256 hex of sorted ``name + "\\n"`` lines plus ``"size={size}\\n"`` (prepare_openmoji's rule)."""
    text = "".join(sorted(f"{n}\n" for n in names)) + f"size={size}\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--openmoji-tarball", type=Path, help="openmoji-17.0.0.tgz (npm pack openmoji@17.0.0)"
    )
    oc = parser.add_mutually_exclusive_group()
    oc.add_argument("--openclipart-dir", type=Path, help="unpacked .deb's usr/share/openclipart/svg")
    oc.add_argument("--openclipart-deb", type=Path, help="openclipart-svg_1%%3a0.18+dfsg-19_all.deb")
    parser.add_argument("--fluent-tarball", type=Path, help="iconify-json-fluent-emoji-flat-1.2.6.tgz")
    parser.add_argument("--twemoji-tarball", type=Path, help="twemoji-svg-15.0.0.tgz")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--size", type=int, default=128, help="output width and height in pixels (128)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (2)")
    parser.add_argument(
        "--limit", type=int, default=None, help="render only the first N sorted items per source"
    )
    parser.add_argument(
        "--sources", default=",".join(SOURCES), help=f"comma list of {', '.join(SOURCES)} (all)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per item before it is dropped (60)"
    )
    parser.add_argument(
        "--pencil-per-source",
        type=int,
        default=PENCIL_PER_SOURCE,
        help="held-out pencil pictures per source (150)",
    )
    args = parser.parse_args(argv)
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(args.sources) - set(SOURCES))
    if unknown:
        parser.error(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    if args.size < 8:
        parser.error("--size must be at least 8")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    # The emoji split of fluent and twemoji follows OpenMoji's, so the OpenMoji package is always needed.
    needs = {"openmoji": "openmoji_tarball", "fluent": "fluent_tarball", "twemoji": "twemoji_tarball"}
    for source in ("openmoji", *args.sources):
        opt = needs.get(source)
        if opt and getattr(args, opt) is None:
            parser.error(
                f"--{opt.replace('_', '-')} is required for {source}"
                + (" (fluent and twemoji follow OpenMoji's split)" if source == "openmoji" else "")
            )
        if opt and not getattr(args, opt).is_file():
            parser.error(f"--{opt.replace('_', '-')} {getattr(args, opt)} not found")
    if "openclipart" in args.sources:
        if args.openclipart_dir is None and args.openclipart_deb is None:
            parser.error("--openclipart-dir or --openclipart-deb is required for openclipart")
        if args.openclipart_dir is not None and not args.openclipart_dir.is_dir():
            parser.error(f"--openclipart-dir {args.openclipart_dir} is not a folder")
        if args.openclipart_deb is not None and not args.openclipart_deb.is_file():
            parser.error(f"--openclipart-deb {args.openclipart_deb} not found")
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarise(source: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of one source's records: per split, per style, per drop reason, fall-backs, strokes check."""
    kept = [r for r in records if r["status"] == "kept"]
    out: dict[str, Any] = {
        "counts": dict(Counter(r["split"] for r in kept)),
        "styles": {
            split: dict(Counter(r["style"] for r in kept if r["split"] == split))
            for split in ("train", "test")
        },
        "dropped_after_render": dict(Counter(r["reason"] for r in records if r["status"] == "dropped")),
    }
    if source != "openmoji":
        out["greyscale_kept"] = sum(1 for r in kept if r.get("greyscale_kept"))
        out["fallbacks"] = dict(
            Counter(f"{r['chosen']}->{r['style']}" for r in kept if r["chosen"] != r["style"])
        )
        checked = [r for r in records if "strokes_check" in r]
        out["strokes_check"] = {
            "checked": len(checked),
            "usable": sum(r["strokes_check"] == "usable" for r in checked),
            "reasons": dict(Counter(r["strokes_check"] for r in checked if r["strokes_check"] != "usable")),
        }
    return out


def run(args: argparse.Namespace, openmoji_root: Path, openclipart_dir: Path | None) -> int:
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    _log("listing sources ...")
    om_items, om_excluded, om_info = list_openmoji(openmoji_root, args.workers)
    openmoji_splits = openmoji_key_splits({it["stem"]: it["split"] for it in om_items})
    listed: dict[str, tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]] = {}
    for source in args.sources:
        if source == "openmoji":
            listed[source] = (om_items, om_excluded, om_info)
        elif source == "twemoji":
            listed[source] = list_twemoji(args.twemoji_tarball, openmoji_splits)
        elif source == "fluent":
            listed[source] = list_fluent(args.fluent_tarball, openmoji_splits)
        else:
            assert openclipart_dir is not None
            listed[source] = list_openclipart(openclipart_dir)
        items = listed[source][0]
        _log(
            f"  {source}: {len(items)} items ({sum(it['split'] == 'test' for it in items)} test)"
            f" ({time.perf_counter() - t0:.1f}s)"
        )

    jobs = []
    for items, _, _ in listed.values():
        chosen = items if args.limit is None else items[: args.limit]
        for it in chosen:
            job = {k: it.get(k) for k in ("source", "stem", "split", "svg", "path")}
            jobs.append({**job, "out": str(args.out), "size": args.size})
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in listed}
    for done, rec in enumerate(run_jobs(jobs, args.workers, args.timeout), start=1):
        records[rec["source"]].append(rec)
        if done % 500 == 0 or done == len(jobs):
            _log(f"  {done}/{len(jobs)} ({time.perf_counter() - t0:.1f}s)")

    stale = 0
    if args.limit is None:  # a --limit run covers only part of each source: leave the rest alone
        for source in listed:
            kept = {r["stem"]: r["split"] for r in records[source] if r["status"] == "kept"}
            stale += remove_stale_files(args.out, source, kept)
    if stale:
        _log(f"  removed {stale} files left by an earlier run")
    manifest_sources = {}
    items_out: dict[str, dict[str, Any]] = {}
    splits_names: dict[str, list[str]] = {"train": []}
    pencil_names: list[str] = []
    for source, (items, listing_drops, info) in listed.items():
        recs = sorted(records[source], key=lambda r: r["stem"])
        keys = {it["stem"]: it["key"] for it in items}
        pencil = make_pencil(args.out, source, recs, keys, args.size, args.pencil_per_source)
        pencil_names += [f"{source}-{s}" for s in pencil]
        summary = summarise(source, recs)
        summary["pencil"] = len(pencil)
        by_key = {it["stem"]: it for it in items}
        manifest_sources[source] = {
            **SOURCE_INFO[source],
            "package_found": info,
            "listed": len(items),
            "rendered": len(recs),
            "dropped_before_render": listing_drops,
            **summary,
        }
        items_out[source] = {}
        for r in recs:
            entry: dict[str, Any] = {"split": r["split"]}
            if r["status"] == "kept":
                entry["style"] = r["style"]
                if r.get("params"):
                    entry["params"] = r["params"]
                if r.get("greyscale_kept"):
                    entry["greyscale_kept"] = True
            else:
                entry["dropped"] = r["reason"]
            key = by_key[r["stem"]].get("key")
            if key is not None and source != "openclipart":
                entry["emoji_key"] = key
            if "relpath" in by_key[r["stem"]]:
                entry["path"] = by_key[r["stem"]]["relpath"]
            items_out[source][r["stem"]] = entry
            if r["status"] == "kept":
                if r["split"] == "train":
                    splits_names["train"].append(f"{source}/{r['stem']}")
                else:
                    splits_names.setdefault(f"test/{source}", []).append(f"{source}/{r['stem']}")
    splits_names["test/pencil"] = pencil_names
    emoji_check = check_emoji_splits({s: listed[s][0] for s in listed if s in EMOJI_SOURCES})
    failures = [
        r for recs in records.values() for r in recs if r.get("reason") in ("render_failed", "render_timeout")
    ]
    manifest = {
        "dataset": "sketchcolor default model v2 data (issue 12)",
        "rules_version": RULES_VERSION,
        "size": args.size,
        "renderer": pom._renderer_version(),
        "limit": args.limit,
        "sources": manifest_sources,
        "rules": rules_description(),
        "emoji_split_check": emoji_check,
        "splits": {
            name: {"count": len(names), "data_digest": data_digest(names, args.size)}
            for name, names in splits_names.items()
        },
        "data_digest_rule": 'sha256 of sorted lines "{source}/{stem}\\n" (pencil: "{source}-{stem}\\n") '
        'followed by "size={size}\\n" (UTF-8)',
        "seconds": round(time.perf_counter() - t0, 1),
        "items": items_out,
    }
    _write_json_atomic(args.out / "manifest.json", manifest)

    print(f"-> {args.out} at {args.size}px in {manifest['seconds']:.0f} s")
    for source, m in manifest_sources.items():
        print(
            f"  {source}: listed {m['listed']}, kept train {m['counts'].get('train', 0)} test "
            f"{m['counts'].get('test', 0)}, pencil {m['pencil']}; dropped before render "
            f"{m['dropped_before_render']}, after {m['dropped_after_render']}; styles {m['styles']}"
        )
    for r in failures[:20]:
        _log(f"  {r['reason']} {r['source']}/{r['stem']}: {r.get('error')}")
    return 0


def check_emoji_splits(items_by_source: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Verify that no emoji key is in test in one source and in train in another (or the same)."""
    splits: dict[str, set[str]] = {}
    sources: dict[str, set[str]] = {}
    for source, items in items_by_source.items():
        for it in items:
            splits.setdefault(it["key"], set()).add(it["split"])
            sources.setdefault(it["key"], set()).add(source)
    conflicts = sorted(k for k, v in splits.items() if len(v) > 1)
    if conflicts:
        raise SystemExit(f"error: emoji keys in both splits: {', '.join(conflicts[:10])}")
    return {
        "keys": len(splits),
        "test_keys": sum(v == {"test"} for v in splits.values()),
        "keys_in_several_sources": sum(len(v) > 1 for v in sources.values()),
        "keys_in_both_splits": 0,
    }


def rules_description() -> dict[str, Any]:
    """The filter, style and split rules as written into the manifest (see the module docstring)."""
    return {
        "keep": {
            "openmoji": "prepare_openmoji.py: stems in black/svg and color/svg, in data/openmoji.json, "
            "not in group flags nor subgroups flags/subdivision-flag; no further filter",
            "twemoji": "flag_sequence: regional-indicator pairs (1F1E6..1F1FF x2) and 1F3F4 tag sequences dropped",
            "fluent": "flag_sequence: as twemoji (none in 1.2.6); aliases ignored",
            "openclipart": {
                "flags_folder": "signs_and_symbols/flags/ (rectangles, as OpenMoji drops flags)",
                "swatch_folder": "special/gradients/ and special/patterns/ (swatches, not drawings)",
                "duplicate_content": "bytes equal to an earlier file in sorted relative-path order",
                "file_too_large": f"over {MAX_FILE_BYTES} bytes",
                "embedded_raster": "contains an <image> element (raster pictures, not drawings)",
            },
            "after_render (not openmoji)": {
                "xml_parse_failed": "not well-formed XML (Python's expat)",
                "render_failed": "resvg error",
                "render_timeout": "item took over --timeout seconds (worker killed)",
                "blank": f"no pixel differs from white by more than {BLANK_DIFF}/255 at {LAYOUT_SIZE} px",
                "nearly_empty": f"under {MIN_DRAWING_FRACTION:.0%} of the cropped canvas is drawing "
                f"(a channel < {WHITE_LEVEL})",
                "greyscale": f"under {MIN_COLOURFUL_FRACTION:.0%} of drawing pixels have LAB chroma > "
                f"{CHROMA_COLOURFUL:g}; kept if sha256('grey:' + source/stem) % {GREY_KEEP_EVERY} == 0",
                "sketch_unusable": "every style in the fall-back chain gave an unusable sketch",
            },
        },
        "layout": f"non-OpenMoji: crop to the non-white box of a {LAYOUT_SIZE} px render ({CROP_TRIM:.2%} "
        f"of drawing pixels trimmed per side), {CROP_MARGIN:.0%} margin per side, square view box "
        "(letterboxed, centred, white); OpenMoji: full 72x72 view box as prepare_openmoji.py",
        "sketch_styles": {
            "choice": "u = sha256(source/stem) % 1000 / 1000; "
            + "; ".join(
                f"{s}: " + ", ".join(f"{st} if u < {t:.3f}" for st, t in th)
                for s, th in STYLE_THRESHOLDS.items()
            ),
            "fallbacks": "strokes -> regions, xdog if sha256('fallback:' + source/stem) % 1000 < 500, else "
            "strokes -> xdog, regions; regions -> xdog; xdog -> regions",
            "strokes": "the SVG rewritten so every visible paint (opacity >= "
            f"{MIN_PAINT_OPACITY}, not under a filter) is black if ink, white otherwise (occlusion kept): "
            f"strokes with L* < {STROKE_LSTAR:g} are ink; openclipart only: fills with L* < "
            f"{DARK_FILL_LSTAR:g} and chroma < {DARK_FILL_CHROMA:g} are ink too (emoji: strokes only); "
            "text/images/filtered elements hidden; darkness normalised (90th percentile of line darkness "
            f"-> black, gain <= 4); usable if >= {MIN_COVERAGE['strokes']:.0%} of region-boundary pixels "
            f"are within {COVER_RADIUS:g} px (at 128) of a line and <= {MAX_SOLID_FRACTION:.0%} of line "
            f"pixels are over {SOLID_RADIUS:g} px deep in ink",
            "regions": f"colour regions (4-neighbour dE76 < {REGION_JOIN_DE:g}); slivers (< "
            f"{REGION_SOLID_SHARE:.0%} of pixels with their 3x3 neighbourhood inside, or < {REGION_MIN_AREA} "
            "px) merged into the nearest region, those sliver pixels whose colour is not within "
            f"{REGION_SEAM_RGB:g}/255 RGB of a mix of the regions within {REGION_SEAM_RADIUS} px drawn as "
            "thin lines; boundary (right/lower neighbour differs) dilated to w px, w in "
            f"{list(REGION_WIDTHS)} with weights {list(REGION_WIDTH_WEIGHTS)} by sha256('width:' + "
            "source/stem), scaled by size/128",
            "xdog": "sketchcolor.data.xdog, XDoGParams.random(torch.Generator seeded sha256('xdog:' + "
            f"source/stem) % 2**63, scale=size/128); usable if >= {MIN_COVERAGE['xdog']:.0%} of "
            f"region-boundary pixels are within {COVER_RADIUS:g} px of a line",
            "usable": f"line (L < {LINE_LEVEL}) on {MIN_LINE_FRACTION:.1%} to {MAX_LINE_FRACTION:.0%} of the "
            f"canvas, and <= {MAX_SOLID_FRACTION:.0%} of line pixels over {SOLID_RADIUS:g} px (at 128) deep in "
            "line (every style, pencil too); regions retries narrower widths (w-1 .. 1) when too dark or solid",
            "openmoji": "its own black/svg line art",
        },
        "held_out_style": {
            "pencil": f"1 - clip(|Sobel(Gaussian_{PENCIL_SIGMA:g}px(L*/100))| / 8 / {PENCIL_SCALE:g}) ** "
            f"{PENCIL_GAMMA:g} (lengths scaled by size/128)",
            "pictures": "per source, kept test items ordered by sha256('pencil:' + source/stem), at most one "
            "per emoji key / OpenClipart group, the first --pencil-per-source with a usable pencil sketch",
        },
        "splits": {
            "openmoji": "prepare_openmoji.py --split-by sketch (v1's split)",
            "emoji": "fluent/twemoji: emoji key (codepoints, upper-case, FE0F and 1F3FB..1F3FF removed) in "
            "OpenMoji's test -> test, in OpenMoji's train -> train, else test if sha256(key) % 10 == 9",
            "fluent_key": "chars.json codepoints of the icon name; names missing there with a skin-tone suffix "
            "use the base name's codepoints; otherwise 'name:<name>' (hash rule)",
            "openclipart": "key = file name without folder/.svg, lower-case, trailing [_0-9]+ removed; "
            "test if sha256(key) % 10 == 9",
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prepare-sources-") as tmp:
        _log(f"extracting {args.openmoji_tarball} ...")
        openmoji_root = pom.extract_tarball(args.openmoji_tarball, Path(tmp) / "openmoji")
        openclipart_dir = args.openclipart_dir
        if "openclipart" in args.sources and openclipart_dir is None:
            _log(f"extracting {args.openclipart_deb} ...")
            openclipart_dir = _extract_deb_data(args.openclipart_deb, Path(tmp) / "openclipart")
        return run(args, openmoji_root, openclipart_dir)


if __name__ == "__main__":
    sys.exit(main())
