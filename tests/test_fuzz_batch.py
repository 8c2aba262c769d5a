"""Fuzz: a few hundred mutated PNGs through one ``batch`` run (issue 10).

The mutations are seeded and structure-aware: random bytes anywhere, truncations, header fields
(width, height, bit depth, colour type) and chunk contents rewritten with valid CRCs, and
recompressed pixel data with random filter bytes, so the decoder sees strange but well-formed
files as well as broken ones. A batch must colour every item it can and record every other one
as failed: exit code 1, no traceback, every item in the manifest.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
from PIL import Image

from sketchcolor.cli import main

N_FILES = 300


def _chunks(data: bytes) -> list[list]:
    pos, out = 8, []
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append([data[pos + 4 : pos + 8], bytearray(data[pos + 8 : pos + 8 + n])])
        pos += 12 + n
    return out


def _build(chunks: list[list]) -> bytes:
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + bytes(body)))
    return bytes(out)


def _seeds(rng: np.random.Generator) -> list[bytes]:
    """Small valid PNGs in every mode the decoder handles."""
    out = []
    for mode, (w, h) in [("L", (24, 16)), ("RGB", (32, 32)), ("RGBA", (16, 40)), ("P", (20, 20)),
                         ("I;16", (16, 16)), ("LA", (12, 30)), ("1", (40, 8))]:  # fmt: skip
        arr = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        img = Image.fromarray(arr, "RGBA")
        if mode == "I;16":
            img = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
        elif mode != "RGBA":
            img = img.convert(mode)
        buffer = io.BytesIO()
        img.save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 6))
    if kind == 0:  # raw byte changes (CRCs break)
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(8, len(b)))] = int(rng.integers(0, 256))
        return bytes(b)
    if kind == 1:  # truncation
        return data[: int(rng.integers(8, len(data)))]
    chunks = _chunks(data)
    if kind == 2:  # a header field, CRC fixed
        ihdr = chunks[0][1]
        field = int(rng.integers(0, 5))
        if field == 0:
            ihdr[0:4] = struct.pack(
                ">I", int(rng.choice([0, 1, 2, 7, 65535, 100000, 2**31 - 1, int(rng.integers(1, 5000))]))
            )
        elif field == 1:
            ihdr[4:8] = struct.pack(
                ">I", int(rng.choice([0, 1, 3, 40000, 2**31 - 1, int(rng.integers(1, 5000))]))
            )
        elif field == 2:
            ihdr[8] = int(rng.choice([1, 2, 4, 8, 16, 3, 0, 255]))
        elif field == 3:
            ihdr[9] = int(rng.choice([0, 2, 3, 4, 6, 1, 5, 7]))
        else:
            ihdr[10 + int(rng.integers(0, 3))] = int(rng.integers(0, 3))
    elif kind == 3:  # chunk contents, CRC fixed
        body = chunks[int(rng.integers(0, len(chunks)))][1]
        for _ in range(int(rng.integers(1, 6))):
            if body:
                body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
    elif kind == 4:  # well-formed compressed data, random scanline bytes (filter types too)
        raw = bytearray(zlib.decompress(b"".join(bytes(c[1]) for c in chunks if c[0] == b"IDAT")))
        for _ in range(int(rng.integers(1, 20))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        others = [c for c in chunks if c[0] != b"IDAT"]
        chunks = [*others[:-1], [b"IDAT", bytearray(zlib.compress(bytes(raw)))], others[-1]]
    elif rng.random() < 0.5:  # drop a chunk
        del chunks[int(rng.integers(0, len(chunks)))]
    else:  # repeat a chunk
        k = int(rng.integers(0, len(chunks)))
        chunks.insert(k, [chunks[k][0], bytearray(chunks[k][1])])
    return _build(chunks)


def test_fuzzed_pngs_through_one_batch(capsys, tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(20260)
    seeds = _seeds(rng)
    pages = tmp_path / "fuzz"
    pages.mkdir()
    for i in range(N_FILES):
        (pages / f"f{i:03d}.png").write_bytes(_mutate(seeds[i % len(seeds)], rng))
    # Strange but valid pictures: extreme aspect ratios and single pixels.
    for name, size in (("tall", (8, 100000)), ("wide", (100000, 8)), ("dot", (1, 1)), ("thin", (1, 300))):
        Image.new("L", size, 255).save(pages / f"x_{name}.png")
    out = tmp_path / "out"
    code = main(["batch", str(pages), "-o", str(out), "-m", str(tiny_checkpoint), "--steps", "1",
                 "-b", "8", "--format", "json"])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 1  # some files are broken
    assert "Traceback" not in stdout + stderr
    assert all(line.startswith("sketchcolor: ") for line in stderr.splitlines() if line.strip())
    summary = json.loads(stdout)
    manifest = json.loads((out / "sketchcolor-manifest.json").read_text())
    entries = manifest["entries"]
    assert len(entries) == N_FILES + 4 == summary["done"] + summary["failed"]
    for e in entries:
        assert e["status"] in ("done", "failed"), e
        if e["status"] == "done":
            with Image.open(e["output"]) as img:
                img.load()
                assert img.size == Image.open(e["input"]).size
        else:
            assert e["error"] and "\n" not in e["error"]
            assert "unexpected" not in e["error"], e  # every failure is a known, named problem
    done = {e["input"].rsplit("/", 1)[-1] for e in entries if e["status"] == "done"}
    assert {"x_tall.png", "x_wide.png", "x_dot.png", "x_thin.png"} <= done
    assert summary["done"] >= 50 and summary["failed"] >= 50  # both kinds were exercised
