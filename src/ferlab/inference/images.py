"""Images in: a path, encoded bytes or a NumPy array, checked (size, format) before decoding.
Bad input raises FerlabError with one sentence naming the input."""

import io
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from ferlab.errors import FerlabError

DEFAULT_MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo passes; 20000x20000 does not
COLORS = ("bgr", "rgb")

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


def _too_large(name: str, pixels: str, limit: int, option: str = "--max-pixels") -> FerlabError:
    return FerlabError(
        f"{name} has {pixels} pixels, above the limit of {limit:,}; resize it, or raise the limit ({option}) if you have the memory."
    )


def _check_header(data: bytes, name: str, max_pixels: int, option: str) -> None:
    """Refuse an image above max_pixels from its header, before decoding it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size  # lazy: reads the header only
    except Image.DecompressionBombError as err:  # Pillow's own limit, at 2 * Image.MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(found.group(1)):,}" if found else f"over {2 * Image.MAX_IMAGE_PIXELS:,}"
        raise _too_large(name, pixels, min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)) from None
    except Exception:
        return  # not a format Pillow knows: OpenCV may, and says so below if not
    if width * height > max_pixels:
        raise _too_large(name, f"{width}x{height} = {width * height:,}", max_pixels, option)


def decode(data: bytes, name: str, max_pixels: int, option: str = "--max-pixels") -> np.ndarray:
    """Encoded image bytes -> a BGR array; `name` is how an error names the input, `option` the limit's."""
    if not data:
        raise FerlabError(f"{name} is empty (0 bytes); it is not an image.")
    _check_header(data, name, max_pixels, option)
    # IMREAD_COLOR: 8-bit BGR whatever the file (grey, 16-bit, alpha), EXIF orientation applied.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FerlabError(
            f"{name} is not a readable image (corrupt, truncated or not an image file); check it or save it again as JPEG or PNG."
        )
    if image.shape[0] * image.shape[1] > max_pixels:
        raise _too_large(name, f"{image.shape[1]}x{image.shape[0]}", max_pixels, option)
    return image


def _from_array(array: np.ndarray, color: str, max_pixels: int) -> np.ndarray:
    a = np.asarray(array)
    shape = a.shape
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.size == 0:
        raise FerlabError(f"the image array has shape {shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise _too_large("the image array", f"{a.shape[1]}x{a.shape[0]}", max_pixels)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if np.nanmin(a) < 0 or np.nanmax(a) > 1:
            raise FerlabError("the float image array has values outside [0, 1]; scale it to [0, 1] or pass uint8.")
        a = np.round(np.nan_to_num(a) * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise FerlabError(f"the image array has dtype {a.dtype}; pass uint8, uint16 or float in [0, 1].")
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    codes = {("bgr", 3): None, ("rgb", 3): cv2.COLOR_RGB2BGR, ("bgr", 4): cv2.COLOR_BGRA2BGR, ("rgb", 4): cv2.COLOR_RGBA2BGR}
    code = codes[color, a.shape[2]]
    return np.ascontiguousarray(a) if code is None else cv2.cvtColor(a, code)


def load_image(image: ImageInput, color: str = "bgr", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A path, encoded bytes (JPEG, PNG, ...) or an array -> BGR uint8 (H, W, 3).

    `color` says the channel order of 3- and 4-channel arrays: "bgr" (OpenCV) or "rgb"
    (Pillow, scikit-image, matplotlib). Grey, RGBA/BGRA, uint16 and float [0, 1] arrays are accepted.
    """
    if color not in COLORS:
        raise FerlabError(f"unknown color order {color!r}; choose one of {', '.join(COLORS)}.")
    if isinstance(image, np.ndarray):
        return _from_array(image, color, max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image), "the image bytes", max_pixels)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FerlabError(f"{path}: no such file; check the path.")
        if path.is_dir():
            raise FerlabError(f"{path} is a folder; pass image files (the CLI also takes folders).")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FerlabError(f"{path} cannot be read ({err.strerror}); check its permissions.") from None
        return decode(data, str(path), max_pixels)
    raise FerlabError(f"cannot read an image from a {type(image).__name__}; pass a path, encoded bytes or a NumPy array.")
