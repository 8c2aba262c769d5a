"""Unit tests of scripts/prepare_sources.py: sketch synthesis, SVG rewriting, layout and splits.

Everything is built in the test (procedural images and SVG strings); no data files, no network.
Tests that render need resvg-py (the ``data`` extra) and are skipped without it.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    name = "prepare_sources"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "prepare_sources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ps = _load_script()
needs_resvg = pytest.mark.skipif(
    importlib.util.find_spec("resvg_py") is None, reason="resvg-py (the 'data' extra) is not installed"
)


def _render(svg: str, size: int = 64) -> np.ndarray:
    return ps.composite_on_white(ps.render_svg(svg, size, size))


# ------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("codepoints", "key"),
    [
        ("1f44b", "1F44B"),
        ("1f44b-1f3fd", "1F44B"),  # skin tone removed
        ("1F44B-1F3FF", "1F44B"),
        ("2764-fe0f", "2764"),  # presentation selector removed
        ("1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff", "1F9D1-200D-1F91D-200D-1F9D1"),
        ("1f468-200d-1f9b0", "1F468-200D-1F9B0"),  # hair components are not skin tones
        ("23-fe0f-20e3", "0023-20E3"),  # OpenMoji writes 0023-FE0F-20E3
        ("1f3fb", "1F3FB"),  # a skin-tone swatch keeps its own key
    ],
)
def test_emoji_key_normalises_skin_tones_and_fe0f(codepoints, key):
    assert ps.emoji_key(codepoints) == key


def test_emoji_key_matches_openmoji_spelling():
    # OpenMoji hexcodes are upper case with FE0F; Twemoji file names are lower case without.
    assert ps.emoji_key("0023-FE0F-20E3") == ps.emoji_key("23-20e3")
    assert ps.emoji_key("1F3C3-1F3FD-200D-2642-FE0F") == ps.emoji_key("1f3c3-200d-2642")


@pytest.mark.parametrize(
    ("codepoints", "flag"),
    [
        ("1f1e9-1f1ea", True),  # DE
        ("1f3f4-e0067-e0062-e0073-e0063-e0074-e007f", True),  # Scotland
        ("1f1e6", False),  # a single regional indicator letter
        ("1f3f4", False),  # black flag
        ("1f3f4-200d-2620-fe0f", False),  # pirate flag
        ("1f600", False),
    ],
)
def test_flag_sequences(codepoints, flag):
    assert ps.is_flag_sequence(codepoints) is flag


def _key_with_split(split: str) -> str:
    for i in range(0x1F900, 0x1FA00):
        key = f"{i:X}"
        if ps.hash_split(key) == split:
            return key
    raise AssertionError("no key found")


def test_an_emoji_gets_the_same_split_in_every_source():
    # OpenMoji's by-drawing split puts waving hand (all tones) in test and grinning face in train.
    openmoji = ps.openmoji_key_splits({"1F44B": "test", "1F44B-1F3FB": "test", "1F600": "train"})
    name_to_codes = {"waving-hand": "1f44b", "grinning-face": "1f600"}
    for fluent_name, twemoji_file, split in [
        ("waving-hand-medium-dark", "1f44b-1f3fe", "test"),
        ("waving-hand", "1f44b", "test"),
        ("grinning-face", "1f600", "train"),
    ]:
        assert ps.emoji_split(ps.fluent_key(fluent_name, name_to_codes), openmoji) == split
        assert ps.emoji_split(ps.emoji_key(twemoji_file), openmoji) == split


def test_emoji_outside_openmoji_split_by_hash_in_every_source():
    openmoji = ps.openmoji_key_splits({"1F600": "train"})
    for split in ("test", "train"):
        key = _key_with_split(split)
        name_to_codes = {"some-emoji": key.lower()}
        assert ps.emoji_split(ps.emoji_key(key.lower() + "-1f3fc"), openmoji) == split
        assert ps.emoji_split(ps.fluent_key("some-emoji-light", name_to_codes), openmoji) == split


def test_openmoji_key_with_any_test_stem_is_test():
    assert ps.openmoji_key_splits({"1F44B-1F3FB": "train", "1F44B": "test"}) == {"1F44B": "test"}
    assert ps.openmoji_key_splits({"1F44B": "test", "1F44B-1F3FB": "train"}) == {"1F44B": "test"}


def test_fluent_name_without_codepoints_uses_its_name():
    assert ps.fluent_key("no-such-emoji", {"waving-hand": "1f44b"}) == "name:no-such-emoji"


def test_openclipart_versions_and_folders_share_a_split():
    a = ps.openclipart_group_key("food/fruit/fruitcollection_leif_lod_07.svg")
    b = ps.openclipart_group_key("food/fruitcollection_leif_lod_01.svg")
    assert a == b == "fruitcollection_leif_lod"
    assert ps.hash_split(a) == ps.hash_split(b)
    assert ps.openclipart_group_key("shapes/stars/star_98pt47step.svg") == "star_98pt47step"


def test_hash_split_share_is_about_one_in_ten():
    share = np.mean([ps.hash_split(f"key-{i}") == "test" for i in range(4000)])
    assert 0.085 < share < 0.115


def test_safe_stem():
    assert (
        ps.safe_stem("computer/icons/flat-theme/action/viewmag+")
        == "computer__icons__flat-theme__action__viewmag_"
    )
    assert ps.safe_stem("../x") == "__x"


# ---------------------------------------------------------------------------------- region lines


def _two_regions(h: int = 32, w: int = 32, edge: int = 16) -> np.ndarray:
    """Red | blue halves split at column ``edge``, with one anti-aliased (50 %) column."""
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[:, :edge] = (220, 30, 30)
    rgb[:, edge:] = (30, 30, 220)
    rgb[:, edge] = (125, 30, 125)
    return rgb


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_region_lines_lie_on_the_colour_edge_with_the_requested_width(width):
    sketch = ps.sketch_regions(_two_regions(), width)
    line = sketch < 128
    cols = np.flatnonzero(line.any(axis=0))
    assert len(cols) == width  # exactly `width` columns, every row covered
    assert line[:, cols].all()
    assert abs(cols.mean() - 15.5) <= width / 2 + 1  # centred on the edge (the seam is merged)
    assert set(np.unique(sketch)) <= {0, 255}


def test_gradients_are_one_region():
    ramp = np.linspace(255, 60, 48)
    rgb = np.stack([ramp, ramp, np.full_like(ramp, 255)], axis=-1)[None].repeat(48, axis=0).astype(np.uint8)
    assert not (ps.sketch_regions(rgb, 1) < 128).any()


def test_thin_dark_line_is_drawn_but_seams_are_not():
    rgb = np.full((40, 40, 3), 235, dtype=np.uint8)
    rgb[5:35, 19:21] = (20, 20, 90)  # a 2 px dark line: too thin to be a region
    sketch = ps.sketch_regions(rgb, 1)
    assert (sketch[5:35, 19:21] < 128).all()
    assert not (sketch[:, :15] < 128).any() and not (sketch[:, 25:] < 128).any()


def test_edge_coverage_and_sketch_checks():
    edges = np.zeros((32, 32), dtype=bool)
    edges[:, 10] = True
    sketch = np.full((32, 32), 255, dtype=np.uint8)
    sketch[:16, 12] = 0  # half the edge, 2 px away
    assert ps.edge_coverage(sketch, edges, 2.0) == pytest.approx(0.5)
    assert ps.edge_coverage(sketch, edges, 1.0) == 0.0
    assert ps.sketch_problem(np.full((32, 32), 255, np.uint8), 1.0) == "too_few_lines"
    assert ps.sketch_problem(np.zeros((32, 32), np.uint8), 1.0) == "too_dark"
    assert ps.sketch_problem(sketch, 1.0) is None
    blob = np.full((32, 32), 255, dtype=np.uint8)
    blob[8:24, 8:24] = 0  # a filled square on 25 % of the canvas: a silhouette, not a line
    assert ps.solid_fraction(blob, 3.0) > 0.3 > ps.solid_fraction(sketch, 3.0) == 0.0
    assert ps.sketch_problem(blob, 1.0) == "too_solid"


def test_pencil_is_soft_grey_and_dark_on_edges():
    sketch = ps.sketch_pencil(_two_regions(32, 32, 16), 1.0)
    assert sketch[:, 16].max() < 200  # dark across the edge
    assert sketch[:, :8].min() == 255 and sketch[:, 26:].min() == 255  # flat areas stay white
    assert len(np.unique(sketch)) > 4  # graded, not binary like the training styles


def test_xdog_style_is_deterministic_per_seed():
    rgb = _two_regions()
    a, pa = ps.sketch_xdog(rgb, 7, 1.0)
    b, pb = ps.sketch_xdog(rgb, 7, 1.0)
    _, pc = ps.sketch_xdog(rgb, 8, 1.0)
    assert np.array_equal(a, b) and pa == pb and pa != pc


def test_style_choice_is_a_function_of_the_item():
    styles = [ps.choose_style("openclipart", f"item{i}") for i in range(600)]
    assert styles == [ps.choose_style("openclipart", f"item{i}") for i in range(600)]
    share = {s: styles.count(s) / len(styles) for s in ps.STYLES}
    assert 0.43 < share["strokes"] < 0.57 and 0.18 < share["regions"] < 0.32
    assert {ps.region_width("twemoji", f"e{i}", 128) for i in range(200)} == {1, 2, 3, 4}
    assert {ps.region_width("twemoji", f"e{i}", 256) for i in range(200)} == {2, 4, 6, 8}


# ------------------------------------------------------------------------------------ SVG rewrite


def test_parse_svg_gives_unitless_documents_a_view_box():
    root = ps.parse_svg(b'<svg width="210mm" height="10cm"><rect width="5" height="5"/></svg>')
    assert root.tag == f"{{{ps.SVG_NS}}}svg"
    w, h = (float(v) for v in root.get("viewBox").split()[2:])
    assert w == pytest.approx(210 * 96 / 25.4, rel=1e-5) and h == pytest.approx(100 * 96 / 25.4, rel=1e-5)
    assert ps.length_px("12pt") == pytest.approx(16.0) and ps.length_px("50%") is None


STROKES_SVG = f"""<svg xmlns="{ps.SVG_NS}" width="64" height="64">
  <style>.ink {{ fill: #111111 }}</style>
  <rect x="8" y="8" width="24" height="24" fill="#ff0000" stroke="#0000aa" stroke-width="4"/>
  <g fill="#00cc00"><rect x="40" y="8" width="16" height="16"/></g>
  <circle class="ink" cx="48" cy="48" r="8"/>
  <rect x="4" y="40" width="20" height="20" fill="#000000"/>
  <rect x="8" y="44" width="12" height="12" fill="#ffcc00"/>
</svg>"""


@needs_resvg
def test_strokes_only_rewrite_renders_no_fills():
    root = ps.parse_svg(STROKES_SVG.encode())
    rewritten, inked = ps.dark_paths_svg(root, dark_fills=False)
    assert inked == 1  # the only stroke
    out = _render(ps.ET.tostring(rewritten, encoding="unicode"))
    assert (out == out[..., :1]).all()  # black and white only: no colour survives
    assert (out[20, 20] == 255).all()  # red fill gone
    assert (out[8, 20] < 64).all()  # blue stroke drawn black
    assert (out[16, 48] == 255).all()  # inherited green fill gone
    assert (out[48, 48] == 255).all()  # near-black fill is not ink for strokes-only
    assert (out[42, 6] == 255).all()


@needs_resvg
def test_dark_paths_keep_occlusion():
    root = ps.parse_svg(STROKES_SVG.encode())
    rewritten, inked = ps.dark_paths_svg(root, dark_fills=True)
    assert inked == 3
    out = _render(ps.ET.tostring(rewritten, encoding="unicode"))
    assert (out[48, 48] < 64).all()  # the CSS-class near-black circle is ink
    assert (out[42, 6] < 64).all()  # the black square shows as a ring ...
    assert (out[50, 14] == 255).all()  # ... where the yellow square covers it, it is white


@needs_resvg
def test_crop_and_letterbox_keep_the_aspect():
    svg = f'<svg xmlns="{ps.SVG_NS}" width="200" height="100"><rect x="100" y="20" width="80" height="40" fill="#0000ff"/></svg>'
    root = ps.parse_svg(svg.encode())
    layout = ps.composite_on_white(ps.render_svg(ps.ET.tostring(root, encoding="unicode"), 256, 256))
    assert layout.shape[:2] == (128, 256)
    box = ps.crop_box(layout)
    out = _render(ps.wrap_svg(root, (layout.shape[1], layout.shape[0]), box, 100), 100)
    blue = (out[..., 2] > 200) & (out[..., 0] < 60)
    rows, cols = np.flatnonzero(blue.any(axis=1)), np.flatnonzero(blue.any(axis=0))
    assert out.shape == (100, 100, 3)
    assert cols[0] == pytest.approx(6, abs=1) and cols[-1] == pytest.approx(93, abs=1)  # 6 % margins
    assert (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1) == pytest.approx(
        2.0, rel=0.05
    )  # not stretched
    assert rows[0] + rows[-1] == pytest.approx(99, abs=1.5)  # centred vertically
    assert (out[:20] == 255).all() and (out[-20:] == 255).all()  # white letterbox bands
