"""Which requests a negotiated conformance block allows, for the meter's association.

Each service needs its conformance bit; a selective (LN) or parameterized (SN) access needs
selective-access or parameterized-access, more than one reference needs
multiple-references. Only the request variants the meter serves pass ``supported_variant``.
"""

from __future__ import annotations

from protocols.enums import ApduTag, Conformance
from protocols.xdlms.codec import Request
from protocols.xdlms.get import GetListRequest, GetNextRequest, GetRequest
from protocols.xdlms.set_action import ActionRequest, SetRequest
from protocols.xdlms.sn import ReadNextRequest, ReadRequest, WriteRequest


def allowed(request: Request, conformance: int) -> bool:
    """Whether the negotiated ``conformance`` covers ``request`` (Green Book service rules)."""
    c = conformance
    if isinstance(request, GetRequest):
        return bool(c & Conformance.GET) and (
            request.access is None or bool(c & Conformance.SELECTIVE_ACCESS)
        )
    if isinstance(request, GetNextRequest):
        return bool(c & Conformance.GET)
    if isinstance(request, GetListRequest):
        return (
            bool(c & Conformance.GET)
            and bool(c & Conformance.MULTIPLE_REFERENCES)
            and (
                all(item[3] is None for item in request.items)
                or bool(c & Conformance.SELECTIVE_ACCESS)
            )
        )
    if isinstance(request, SetRequest):
        return bool(c & Conformance.SET) and request.access is None
    if isinstance(request, ActionRequest):
        return bool(c & Conformance.ACTION)
    if isinstance(request, ReadNextRequest):
        return bool(c & Conformance.READ) and bool(c & Conformance.BLOCK_TRANSFER_WITH_GET)
    if isinstance(request, ReadRequest | WriteRequest):
        read = isinstance(request, ReadRequest)
        count = len(request.references if isinstance(request, ReadRequest) else request.items)
        parameterized = isinstance(request, ReadRequest) and any(
            access is not None for _, access in request.references
        )
        return (
            bool(c & (Conformance.READ if read else Conformance.WRITE))
            and (count == 1 or bool(c & Conformance.MULTIPLE_REFERENCES))
            and (not parameterized or bool(c & Conformance.PARAMETERIZED_ACCESS))
        )
    return False


def supported_variant(data: bytes) -> bool:
    """GET normal/next/with-list, SET normal, ACTION normal, SN Read/Write; no other variant."""
    if len(data) < 3:
        return True  # let the decoder call it malformed
    tag, kind = data[0], data[1]
    if tag in (ApduTag.READ_REQUEST, ApduTag.WRITE_REQUEST):
        return True  # no variants: the second byte is the number of references
    if tag == ApduTag.GET_REQUEST:
        return kind in (1, 2, 3)
    return kind == 1
