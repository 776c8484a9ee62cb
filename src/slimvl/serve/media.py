"""Images of a chat request: ``data:image/...;base64,`` URIs, or local files under one allowed directory.
Nothing is fetched from the network."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from slimvl.serve.errors import bad_request

PARAM = "messages.content.image_url"


class MediaReader:
    """Opens request images; `allowed_dir` (None: no local files) bounds the files a URL may name."""

    def __init__(self, max_pixels: int, allowed_dir: Path | None = None) -> None:
        self.max_pixels = max_pixels
        self.allowed_dir = allowed_dir.resolve() if allowed_dir is not None else None

    def open(self, url: str) -> Image.Image:
        """The RGB image `url` names; APIError 400 naming what is wrong."""
        if not isinstance(url, str) or not url:
            raise bad_request("image_url.url must be a non-empty string", PARAM)
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return self._decode(_data_uri_bytes(url), "the data URI")
        if scheme in ("http", "https"):
            raise bad_request(
                "remote image URLs are not fetched by this server; send the image as a "
                "data:image/...;base64, URI (or a file under --allowed-media-dir)",
                PARAM,
                "remote_url_refused",
            )
        if scheme == "file" or scheme == "":
            path = self._allowed_path(unquote(urlparse(url).path) if scheme == "file" else url)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise bad_request(f"cannot read image file {path.name}: {exc.strerror}", PARAM) from None
            return self._decode(data, f"file {path.name}")
        raise bad_request(f"image URL scheme {scheme!r} is not supported (data: or file:)", PARAM)

    def _allowed_path(self, name: str) -> Path:
        if self.allowed_dir is None:
            raise bad_request(
                "local image files are refused: the server was started without --allowed-media-dir", PARAM
            )
        path = (self.allowed_dir / name).resolve()
        if not path.is_relative_to(self.allowed_dir):
            raise bad_request("the image file is outside --allowed-media-dir", PARAM)
        return path

    def _decode(self, data: bytes, what: str) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.width * image.height
                if pixels > self.max_pixels:
                    raise bad_request(
                        f"{what} is {image.width} x {image.height} = {pixels} pixels; "
                        f"max_image_pixels is {self.max_pixels}",
                        PARAM,
                        "max_image_pixels",
                    )
                image.load()
                return image.convert("RGB")
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise bad_request(f"{what} is not an image this server can read ({exc})", PARAM) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise bad_request(f"{what} is a broken image: {exc}", PARAM) from None


def _data_uri_bytes(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise bad_request("a data URI image must look like data:image/<type>;base64,<data>", PARAM)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            "the data URI's base64 payload is not valid base64", PARAM, "invalid_base64"
        ) from None
