"""Reading and writing still images as RGB(A) uint8 arrays (OpenCV for the codecs)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srgan_deploy.errors import ImageReadError, InputFileError, OutputError
from srgan_deploy.files import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Input pixels accepted by default (--max-pixels): 40 MP covers every camera sensor up to 8K video frames;
# its 4x output is 640 MP (1.9 GB as RGB), still bounded in memory with tiling. A file that claims more
# in its header is refused before it is decoded.
DEFAULT_MAX_PIXELS = 40_000_000

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def probe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image header without decoding it: PNG, JPEG, BMP, GIF, WebP, TIFF.

    Why: decoding first is what lets a 31 KB PNG claiming 16000x16000 take 19 GB. None when the
    format is not recognised (the decoder and the size check after it still apply)."""
    import struct

    try:
        if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(int(w)), abs(int(h))
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8X":
                w = 1 + int.from_bytes(data[24:27], "little")
                h = 1 + int.from_bytes(data[27:30], "little")
                return w, h
            if kind == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return int(w) & 0x3FFF, int(h) & 0x3FFF
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    i += 2
                    continue
                length = int.from_bytes(data[i + 2 : i + 4], "big")
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return int(w), int(h)
                i += 2 + length
            return None
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            end = "<" if data[:2] == b"II" else ">"
            offset = struct.unpack(end + "I", data[4:8])[0]
            count = struct.unpack(end + "H", data[offset : offset + 2])[0]
            size: dict[int, int] = {}
            for k in range(count):
                entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
                tag, kind = struct.unpack(end + "HH", entry[:4])
                if tag in (256, 257):
                    size[tag] = struct.unpack(end + ("H" if kind == 3 else "I"), entry[8 : 10 if kind == 3 else 12])[0]
            if 256 in size and 257 in size:
                return int(size[256]), int(size[257])
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, body offset, body length) of a PNG's chunks before its image data: where the ancillary chunks
    read here (eXIf, acTL, iCCP) must stand."""
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind in (b"IDAT", b"IEND"):
            return
        yield kind, i + 8, length
        i += 12 + length


def _webp_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(FourCC, body offset, body length) of a WebP's RIFF chunks (bodies padded to even sizes)."""
    i = 12
    while i + 8 <= len(data):
        length = int.from_bytes(data[i + 4 : i + 8], "little")
        yield data[i : i + 4], i + 8, length
        i += 8 + length + (length & 1)


def _exif_block(data: bytes) -> int | None:
    """Offset of the EXIF TIFF header (``II*\0`` / ``MM\0*``) inside a JPEG (APP1), PNG (eXIf) or WebP (EXIF)
    file, or None. TIFF files carry their orientation in their own header, which OpenCV applies itself."""
    if data[:2] == b"\xff\xd8":
        start = data.find(b"Exif\x00\x00", 0, 65536)
        return start + 6 if start >= 0 else None
    if data[:8] == PNG_SIGNATURE:
        return next((body for kind, body, _ in _png_chunks(data) if kind == b"eXIf"), None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        for kind, body, _ in _webp_chunks(data):
            if kind == b"EXIF":
                return body + 6 if data[body : body + 6] == b"Exif\x00\x00" else body
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of a JPEG, PNG or WebP, 1 when absent. Phones store portrait shots as
    landscape pixels plus this tag (and keep it when converting to PNG or WebP); viewers turn the picture by
    it, so ignoring it puts the picture on its side."""
    import struct

    tiff = _exif_block(data)
    if tiff is None:
        return 1
    try:
        end = "<" if data[tiff : tiff + 2] == b"II" else ">"
        offset = tiff + struct.unpack(end + "I", data[tiff + 4 : tiff + 8])[0]
        count = struct.unpack(end + "H", data[offset : offset + 2])[0]
        for k in range(count):
            entry = offset + 2 + 12 * k
            tag = struct.unpack(end + "H", data[entry : entry + 2])[0]
            if tag == 0x0112:
                value = int(struct.unpack(end + "H", data[entry + 8 : entry + 10])[0])
                return value if 1 <= value <= 8 else 1
    except (struct.error, IndexError):
        return 1
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as the viewer should see them for EXIF orientation 1-8."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # transverse: the mirror of 5
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(image)) if op else image


def list_images(path: Path, recursive: bool = True) -> list[Path]:
    """Image files under a folder (sorted, so runs are reproducible), or the file itself."""
    if not path.exists():
        raise InputFileError(f"no such file or folder: {path}")
    if path.is_file():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """HxWx3 RGB, HxWx4 RGBA or HxW grey uint8, EXIF orientation applied. 16-bit images are reduced to
    8 bits. Files whose header claims more than ``max_pixels`` are refused before decoding."""
    return read_image_and_icc(path, max_pixels)[0]


def read_image_and_icc(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bytes | None]:
    """``read_image`` plus the file's embedded ICC profile, from the same read of the file."""
    loaded = load_image(path, max_pixels)
    return loaded.image, loaded.icc


@dataclass
class LoadedImage:
    image: np.ndarray  # as ``read_image`` returns it
    icc: bytes | None  # the embedded ICC profile
    frames: int  # pictures in the file (an animation, pages); only the first is decoded


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """``read_image`` plus the ICC profile and the number of pictures in the file, from one read of it."""
    import cv2

    if not path.exists():
        raise InputFileError(f"no such file: {path}")
    if path.is_dir():
        raise InputFileError(f"expected an image file, got a folder: {path}")
    if not path.is_file():  # a FIFO or device would block or never end
        raise InputFileError(f"{path} is not a regular file")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc.strerror}") from exc
    header = data[:262144].tobytes()
    size = probe_size(header)
    if size is not None:
        check_pixels(path, size[0], size[1], max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image or corrupt (supported: png, jpg, webp, bmp, tiff)")
    check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4 and tiff_alpha_is_premultiplied(header):
        image = unpremultiply(image)
    image = apply_orientation(image, exif_orientation(header))
    icc = icc_profile(data[: 1 << 20].tobytes())
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype}; convert it to 8-bit")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return LoadedImage(
        np.ascontiguousarray(image), icc, count_frames(data.tobytes() if data.size < 1 << 26 else header)
    )


def tiff_alpha_is_premultiplied(data: bytes) -> bool:
    """Whether OpenCV hands this TIFF's 8-bit RGBA back premultiplied: it decodes such files through libtiff's
    RGBA interface, which multiplies the colour of an unassociated alpha (ExtraSamples 2) by the alpha, and an
    associated one (1) is stored that way. PNG, WebP and TIFF outputs all hold straight alpha."""
    import struct

    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    end = "<" if data[:2] == b"II" else ">"
    try:
        offset = struct.unpack(end + "I", data[4:8])[0]
        count = struct.unpack(end + "H", data[offset : offset + 2])[0]
        for k in range(count):
            entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
            tag = struct.unpack(end + "H", entry[:2])[0]
            if tag == 338:  # ExtraSamples: the first extra sample's kind, stored in the entry (SHORT)
                return int(struct.unpack(end + "H", entry[8:10])[0]) in (1, 2)
    except (struct.error, IndexError):
        return False
    return False


def unpremultiply(bgra: np.ndarray) -> np.ndarray:
    """Straight colour from premultiplied 8-bit BGRA (fully transparent pixels keep 0)."""
    alpha = bgra[:, :, 3:4].astype(np.float32)
    colour = bgra[:, :, :3].astype(np.float32) * 255.0 / np.maximum(alpha, 1.0)
    out = bgra.copy()
    out[:, :, :3] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    return out


def count_frames(data: bytes) -> int:
    """Pictures in an animated PNG (acTL), GIF, animated WebP (ANMF) or multi-page TIFF; 1 for a still image
    or one not recognised. OpenCV decodes the first only: the caller says so instead of dropping the rest
    silently."""
    import struct

    try:
        if data[:8] == PNG_SIGNATURE:
            for kind, body, _ in _png_chunks(data):
                if kind == b"acTL":
                    return max(1, int(struct.unpack(">I", data[body : body + 4])[0]))
            return 1
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return max(1, _gif_frames(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return max(1, sum(kind == b"ANMF" for kind, _, _ in _webp_chunks(data)))
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            end = "<" if data[:2] == b"II" else ">"
            pages, offset, seen = 0, struct.unpack(end + "I", data[4:8])[0], set()
            while offset and offset not in seen and offset + 2 <= len(data) and pages < 10000:
                seen.add(offset)
                count = struct.unpack(end + "H", data[offset : offset + 2])[0]
                subfile = 0
                for k in range(count):
                    entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
                    if struct.unpack(end + "H", entry[:2])[0] == 254:  # NewSubfileType: 1 = a thumbnail
                        subfile = struct.unpack(end + "I", entry[8:12])[0]
                pages += not subfile & 1
                next_at = offset + 2 + 12 * count
                offset = struct.unpack(end + "I", data[next_at : next_at + 4])[0]
            return max(1, pages)
    except (struct.error, IndexError, ValueError):
        return 1
    return 1


def _gif_frames(data: bytes) -> int:
    """Image descriptors in a GIF (walks its blocks without decoding)."""
    i = 13
    flags = data[10]
    if flags & 0x80:
        i += 3 << ((flags & 7) + 1)
    frames = 0
    while i < len(data):
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            i += 2
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW size, sub-blocks
            frames += 1
            local = data[i + 9]
            i += 10 + ((3 << ((local & 7) + 1)) if local & 0x80 else 0) + 1
        else:
            break
        while i < len(data) and data[i]:
            i += data[i] + 1
        i += 1
    return frames


def icc_profile(data: bytes) -> bytes | None:
    """The embedded ICC colour profile of a PNG (iCCP) or JPEG (APP2 ICC_PROFILE), or None.

    Why keep it: a wide-gamut or calibrated photo shown without its profile looks washed out or
    oversaturated; the upscaled file should look like the original."""
    import struct
    import zlib

    try:
        if data[:8] == PNG_SIGNATURE:
            for kind, start, length in _png_chunks(data):
                if kind == b"iCCP":
                    body = data[start : start + length]
                    name_end = body.index(b"\x00")
                    return zlib.decompress(body[name_end + 2 :])
            return None
        if data[:2] == b"\xff\xd8":
            parts: dict[int, bytes] = {}
            i = 2
            while i + 4 <= len(data) and data[i] == 0xFF:
                marker = data[i + 1]
                if marker == 0xDA:  # start of scan: no more metadata
                    break
                length = struct.unpack(">H", data[i + 2 : i + 4])[0]
                body = data[i + 4 : i + 2 + length]
                if marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00"):
                    parts[body[12]] = body[14:]
                i += 2 + length
            return b"".join(parts[k] for k in sorted(parts)) if parts else None
    except (struct.error, ValueError, IndexError, zlib.error):
        return None
    return None


def embed_icc(encoded: bytes, suffix: str, profile: bytes) -> bytes:
    """``encoded`` (PNG or JPEG bytes from OpenCV, which writes no profile) with ``profile`` embedded."""
    import struct
    import zlib

    if suffix == ".png" and encoded[:8] == PNG_SIGNATURE:
        body = b"ICC profile\x00\x00" + zlib.compress(profile)
        chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
        ihdr_end = 8 + 12 + struct.unpack(">I", encoded[8:12])[0]
        return encoded[:ihdr_end] + chunk + encoded[ihdr_end:]
    if suffix in (".jpg", ".jpeg") and encoded[:2] == b"\xff\xd8":
        size = 65519
        pieces = [profile[i : i + size] for i in range(0, len(profile), size)]
        segments = b"".join(
            b"\xff\xe2" + struct.pack(">H", len(p) + 16) + b"ICC_PROFILE\x00" + bytes([k + 1, len(pieces)]) + p
            for k, p in enumerate(pieces)
        )
        return encoded[:2] + segments + encoded[2:]
    return encoded


def check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageReadError(f"{path} has an empty {width}x{height} picture")
    if width * height > max_pixels:
        raise ImageReadError(
            f"{path} is {width}x{height} = {width * height / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit; "
            "raise it with --max-pixels if you mean it (it is processed in tiles)"
        )


def write_image(path: Path, image: np.ndarray, icc: bytes | None = None) -> None:
    """Write RGB/RGBA/grey uint8; the codec follows the suffix. Atomic: temp file, then rename.

    The array is consumed: its channels are swapped to BGR in place (no copy of a large output)."""
    import cv2

    if image.ndim == 3:
        # channel swap in place: for a 4x output of a 4K photo a copy would be another 400 MB
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = np.ascontiguousarray(image)
        cv2.cvtColor(image, code, dst=image)
    params: list[int] = []
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 95]
    ok, buf = cv2.imencode(suffix or ".png", image, params)
    if not ok:
        raise OutputError(f"cannot encode {path}: unsupported format '{suffix}' (use png, jpg or webp)")
    encoded = buf.tobytes()
    if icc:
        encoded = embed_icc(encoded, suffix, icc)
    try:
        atomic_write_bytes(path, encoded)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Drop alpha / expand grey so the model always sees HxWx3."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def make_input(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A deterministic uint8 NHWC batch with smooth regions, edges and noise (like real frames)."""
    b, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for i in range(b):
        base = np.stack([np.sin(xx / (3 + i + c) + c) * np.cos(yy / (4 + c)) for c in range(3)], axis=2)
        edges = ((xx > w / 2) ^ (yy > h / 3))[..., None] * 0.3
        noise = rng.normal(0, 0.08, (h, w, 3))
        frames.append(np.clip((0.35 * base + 0.35 + edges + noise) * 255, 0, 255))
    return np.stack(frames).astype(np.uint8)
