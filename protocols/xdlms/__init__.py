"""xDLMS and ACSE for both ends of a DLMS/COSEM association (sans-IO), one module per service.

``acse`` (AARQ/AARE/RLRQ/RLRE, BER), ``initiate`` (the Initiate APDUs and conformance),
``get``, ``set_action``, ``exception`` (ExceptionResponse, ConfirmedServiceError),
``notification`` (Data-Notification), ``sn`` (short-name Read/Write and the SN object
list), ``conformance`` (which requests a negotiated block allows), ``descriptors`` (the
fields they share) and ``codec`` (decode by first byte). Each service keeps its request and
response together. This package re-exports their public names, so callers write
``xdlms.build_get`` and
``xdlms.decode_response``. The association state machine of both roles builds on these in
``protocols.association``.
"""

from __future__ import annotations

from protocols.xdlms.acse import (
    AUTHENTICATION_MECHANISMS,
    AareInfo,
    AarqInfo,
    Authentication,
    ReleaseRequest,
    ReleaseResponse,
    build_aare,
    build_aarq,
    build_rlre,
    build_rlrq,
)
from protocols.xdlms.codec import (
    Request,
    Response,
    decode_request,
    decode_response,
    parse_aare,
)
from protocols.xdlms.descriptors import (
    AccessSelection,
    ColumnLike,
    ColumnRef,
    EntryAccess,
    ObisLike,
    RangeAccess,
)
from protocols.xdlms.exception import (
    ExceptionResult,
    ServiceErrorResult,
    build_exception_response,
    build_service_error,
)
from protocols.xdlms.get import (
    GetBlock,
    GetError,
    GetListItem,
    GetListRequest,
    GetListResult,
    GetNextRequest,
    GetRequest,
    GetResult,
    build_get,
    build_get_list_response,
    build_get_next,
    build_get_response,
    build_get_response_block,
    build_get_response_block_error,
    build_get_response_error,
    build_get_with_list,
)
from protocols.xdlms.initiate import (
    DEFAULT_CONFORMANCE,
    InitiateInfo,
    build_initiate_request,
    build_initiate_response,
    decode_initiate,
)
from protocols.xdlms.notification import (
    DataNotification,
    build_data_notification,
)
from protocols.xdlms.set_action import (
    ActionRequest,
    ActionResult,
    SetRequest,
    SetResult,
    build_action,
    build_action_response,
    build_set,
    build_set_response,
)
from protocols.xdlms.sn import (
    ObjectList,
    ReadRequest,
    ReadResponse,
    WriteRequest,
    WriteResponse,
    build_read_request,
    build_read_response,
    build_write_request,
    build_write_response,
    short_name,
)

__all__ = [
    "AUTHENTICATION_MECHANISMS",
    "DEFAULT_CONFORMANCE",
    "AareInfo",
    "AarqInfo",
    "AccessSelection",
    "ActionRequest",
    "ActionResult",
    "Authentication",
    "ColumnLike",
    "ColumnRef",
    "DataNotification",
    "EntryAccess",
    "ExceptionResult",
    "GetBlock",
    "GetError",
    "GetListItem",
    "GetListRequest",
    "GetListResult",
    "GetNextRequest",
    "GetRequest",
    "GetResult",
    "InitiateInfo",
    "ObisLike",
    "ObjectList",
    "RangeAccess",
    "ReadRequest",
    "ReadResponse",
    "ReleaseRequest",
    "ReleaseResponse",
    "Request",
    "Response",
    "ServiceErrorResult",
    "SetRequest",
    "SetResult",
    "WriteRequest",
    "WriteResponse",
    "build_aare",
    "build_aarq",
    "build_action",
    "build_action_response",
    "build_data_notification",
    "build_exception_response",
    "build_get",
    "build_get_list_response",
    "build_get_next",
    "build_get_response",
    "build_get_response_block",
    "build_get_response_block_error",
    "build_get_response_error",
    "build_get_with_list",
    "build_initiate_request",
    "build_initiate_response",
    "build_read_request",
    "build_read_response",
    "build_rlre",
    "build_rlrq",
    "build_service_error",
    "build_set",
    "build_set_response",
    "build_write_request",
    "build_write_response",
    "decode_initiate",
    "decode_request",
    "decode_response",
    "parse_aare",
    "short_name",
]
