"""Two CRI calls over the socket, with the same small gRPC client as the health probes:
RuntimeService/Status (is the network ready, as a kubelet sees it) and ImageService/ImageStatus
(is the sandbox image there, and pinned)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from warren_bundle.runtime.grpc_unix import encode_string_field, iter_fields, unary_call

STATUS = "/runtime.v1.RuntimeService/Status"
IMAGE_STATUS = "/runtime.v1.ImageService/ImageStatus"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def _text(value: int | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def conditions(socket: str | os.PathLike[str], timeout: float = 2.0) -> dict[str, Condition]:
    """RuntimeReady, NetworkReady, ... as CRI reports them; raises GrpcError."""
    reply = unary_call(os.fspath(socket), STATUS, b"", timeout).message
    found = {}
    for number, status in iter_fields(reply):
        if number != 1 or not isinstance(status, bytes):
            continue
        for cnum, raw in iter_fields(status):
            if cnum != 1 or not isinstance(raw, bytes):
                continue
            fields = dict(iter_fields(raw))
            cond = Condition(
                _text(fields.get(1, b"")),
                bool(fields.get(2, 0)),
                _text(fields.get(3, b"")),
                _text(fields.get(4, b"")),
            )
            found[cond.type] = cond
    return found


@dataclass(frozen=True)
class ImageInfo:
    id: str
    pinned: bool


def image_status(
    socket: str | os.PathLike[str], ref: str, timeout: float = 2.0
) -> ImageInfo | None:
    """The image CRI knows by `ref`, or None; raises GrpcError."""
    spec = encode_string_field(1, ref)
    request = bytes([0x0A, len(spec)]) + spec if len(spec) < 128 else b""
    if not request:
        raise ValueError(f"image reference too long: {ref!r}")
    reply = unary_call(os.fspath(socket), IMAGE_STATUS, request, timeout).message
    image = dict(iter_fields(reply)).get(1)
    if not isinstance(image, bytes) or not image:
        return None
    fields = dict(iter_fields(image))
    return ImageInfo(_text(fields.get(1, b"")), bool(fields.get(8, 0)))
