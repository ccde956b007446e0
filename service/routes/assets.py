"""The files the pages and the API docs load, served by the service itself (no CDN).

plotly.js comes from the plotly package and Swagger UI / ReDoc from fastapi-offline's,
so a machine without internet still draws charts and shows ``/docs``; nothing is
built with JavaScript tooling. The set of files is fixed at import, which lets the
access control open exactly these paths (they hold no data) and nothing that
merely starts like them.
"""

import functools
import gzip
from dataclasses import dataclass
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.problems import NotFound

router = APIRouter(tags=["pages"], include_in_schema=False)

STATIC_PREFIX = "/static/"
# A day: URLs carry the package version (static_url), so a new release is fetched anew.
CACHE_CONTROL = "public, max-age=86400"


@dataclass(frozen=True)
class Asset:
    file: Path
    media_type: str


def _media_type(file: Path) -> str:
    return {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".png": "image/png",
    }[file.suffix]


def _package_folder(package: str) -> Path:
    """Where an installed package lives, found without importing it (plotly is slow to)."""
    spec = find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(package)
    return Path(spec.origin).parent


def _assets() -> dict[str, Asset]:
    own = Path(__file__).parent.parent / "static"
    docs = _package_folder("fastapi_offline") / "static"
    files = {
        "lrkeeper.css": own / "lrkeeper.css",
        "charts.js": own / "charts.js",
        "vendor/plotly.min.js": _package_folder("plotly") / "package_data" / "plotly.min.js",
        "docs/swagger-ui-bundle.js": docs / "swagger-ui-bundle.js",
        "docs/swagger-ui.css": docs / "swagger-ui.css",
        "docs/redoc.standalone.js": docs / "redoc.standalone.js",
        "docs/favicon.png": docs / "favicon.png",
    }
    return {name: Asset(file, _media_type(file)) for name, file in files.items()}


ASSETS = _assets()
ASSET_PATHS = frozenset(STATIC_PREFIX + name for name in ASSETS)


@functools.cache
def _release() -> str:
    return version("lrkeeper")


def static_url(name: str) -> str:
    """The URL of an asset, versioned so that a cached copy never outlives a release."""
    if name not in ASSETS:
        raise KeyError(name)
    return f"{STATIC_PREFIX}{name}?v={_release()}"


@functools.cache
def _content(name: str) -> tuple[bytes, bytes]:
    """The file and its gzip (plotly.min.js is 4.8 MB, 1.4 MB gzipped), read once."""
    body = ASSETS[name].file.read_bytes()
    return body, gzip.compress(body, compresslevel=6, mtime=0)


@router.get(STATIC_PREFIX + "{name:path}")
def asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    body, compressed = _content(name)
    headers = {"Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = compressed
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=ASSETS[name].media_type, headers=headers)
