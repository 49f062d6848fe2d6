"""The protocol numbers of DLMS/COSEM in one place, as IntEnums.

Every layer used to re-type these as bare ints (class ids, Data-Access-Results, the
ExceptionResponse codes, the ACSE diagnostics); one set here means a value has one name
and a log line can print it. Sources: IEC 62056-5-3 (Green Book: APDU tags, ACSE, xDLMS
errors), IEC 62056-6-2 (Blue Book: interface classes, Data-Access-Result, conformance).
Being IntEnums they still compare and encode as the integers on the wire.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class ApduTag(IntEnum):
    """First byte of an APDU: ACSE APPLICATION tags and the xDLMS-APDU CHOICE."""

    AARQ = 0x60
    AARE = 0x61
    RLRQ = 0x62
    RLRE = 0x63
    READ_REQUEST = 0x05
    WRITE_REQUEST = 0x06
    READ_RESPONSE = 0x0C
    WRITE_RESPONSE = 0x0D
    GET_REQUEST = 0xC0
    SET_REQUEST = 0xC1
    ACTION_REQUEST = 0xC3
    GET_RESPONSE = 0xC4
    SET_RESPONSE = 0xC5
    ACTION_RESPONSE = 0xC7
    EXCEPTION_RESPONSE = 0xD8
    CONFIRMED_SERVICE_ERROR = 0x0E
    DATA_NOTIFICATION = 0x0F
    INITIATE_REQUEST = 0x01
    INITIATE_RESPONSE = 0x08
    GENERAL_BLOCK_TRANSFER = 0xE0


class InterfaceClass(IntEnum):
    """COSEM interface class ids (Blue Book) that hes reads, writes or serves."""

    DATA = 1
    REGISTER = 3
    EXTENDED_REGISTER = 4
    DEMAND_REGISTER = 5
    PROFILE_GENERIC = 7
    CLOCK = 8
    ASSOCIATION_SN = 12
    ASSOCIATION_LN = 15
    IMAGE_TRANSFER = 18
    PUSH_SETUP = 40
    DISCONNECT_CONTROL = 70


class DataAccessResult(IntEnum):
    """Data-Access-Result of GET/SET (Blue Book); ACTION's Action-Result shares the codes."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class StateError(IntEnum):
    """ExceptionResponse state-error (Green Book)."""

    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceErrorCode(IntEnum):
    """ExceptionResponse service-error (Green Book)."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


class ServiceErrorChoice(IntEnum):
    """The ServiceError CHOICE of a ConfirmedServiceError (Green Book)."""

    APPLICATION_REFERENCE = 0
    HARDWARE_RESOURCE = 1
    VDE_STATE_ERROR = 2
    SERVICE = 3
    DEFINITION = 4
    ACCESS = 5
    INITIATE = 6
    LOAD_DATA_SET = 7
    TASK = 9
    OTHER_ERROR = 10


class InitiateError(IntEnum):
    """ServiceError initiate (CHOICE 6) codes, sent when an InitiateRequest is refused."""

    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_VDE_HANDLER = 4


class ApplicationReferenceError(IntEnum):
    """ServiceError application-reference (CHOICE 0) codes."""

    OTHER = 0
    TIME_ELAPSED = 1
    APPLICATION_UNREACHABLE = 2
    APPLICATION_REFERENCE_INVALID = 3
    APPLICATION_CONTEXT_UNSUPPORTED = 4
    PROVIDER_COMMUNICATION_ERROR = 5
    DECIPHERING_ERROR = 6


class ConfirmedService(IntEnum):
    """The ConfirmedServiceError CHOICE naming the service that failed."""

    INITIATE_ERROR = 1
    GET_STATUS = 2
    GET_NAME_LIST = 3
    GET_VARIABLE_ATTRIBUTE = 4
    READ = 5
    WRITE = 6


class AssociationResult(IntEnum):
    """AARE result (ISO 8650-1)."""

    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class AcseDiagnostic(IntEnum):
    """AARE result-source-diagnostic, acse-service-user (ISO 8650-1 / Green Book)."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 4
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLING_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 6
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 8
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    CALLED_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 10
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class DiagnosticSource(IntEnum):
    """Which ACSE party gave the diagnostic (the CHOICE tag inside A3)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER = 2


class ReleaseReason(IntEnum):
    """RLRQ/RLRE reason (ISO 8650-1); the request and response share the numbers."""

    NORMAL = 0
    URGENT = 1
    USER_DEFINED = 30


class Mechanism(IntEnum):
    """Authentication mechanism ids: the last arc of 2.16.756.5.8.2.x (Green Book)."""

    NONE = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class ApplicationContext(IntEnum):
    """Application context names: the last arc of 2.16.756.5.8.1.x (Green Book)."""

    LN = 1
    SN = 2
    LN_CIPHERED = 3
    SN_CIPHERED = 4


class Conformance(IntFlag):
    """The 24-bit conformance block as an int: Blue Book bit n is ``1 << (23 - n)``.

    Read (bit 3), write (4), unconfirmed-write (5), information-report (15) and
    parameterized-access (18) belong to SN referencing only; multiple-references (14) and
    block-transfer-with-get-or-read (11) serve both.
    """

    ACTION = 1 << 0
    EVENT_NOTIFICATION = 1 << 1
    SELECTIVE_ACCESS = 1 << 2
    SET = 1 << 3
    GET = 1 << 4
    ACCESS = 1 << 6
    DATA_NOTIFICATION = 1 << 7
    MULTIPLE_REFERENCES = 1 << 9
    BLOCK_TRANSFER_WITH_ACTION = 1 << 10
    BLOCK_TRANSFER_WITH_SET = 1 << 11
    BLOCK_TRANSFER_WITH_GET = 1 << 12
    ATTRIBUTE_0_WITH_GET = 1 << 13
    PRIORITY_MANAGEMENT = 1 << 14
    ATTRIBUTE_0_WITH_SET = 1 << 15
    DELTA_VALUE_ENCODING = 1 << 17
    GENERAL_BLOCK_TRANSFER = 1 << 21
    GENERAL_PROTECTION = 1 << 22
    PARAMETERIZED_ACCESS = 1 << 5
    INFORMATION_REPORT = 1 << 8
    UNCONFIRMED_WRITE = 1 << 18
    WRITE = 1 << 19
    READ = 1 << 20


#: The conformance bits of SN referencing alone.
SN_ONLY_CONFORMANCE = (
    Conformance.READ
    | Conformance.WRITE
    | Conformance.UNCONFIRMED_WRITE
    | Conformance.INFORMATION_REPORT
    | Conformance.PARAMETERIZED_ACCESS
)
#: Every LN conformance bit; a proposal with any other bit is refused by the builders.
LN_CONFORMANCE_MASK = sum(int(bit) for bit in Conformance) & ~SN_ONLY_CONFORMANCE
#: The bits an SN association may carry: the SN services and those both referencings share.
SN_CONFORMANCE_MASK = (
    SN_ONLY_CONFORMANCE
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.BLOCK_TRANSFER_WITH_GET
    | Conformance.BLOCK_TRANSFER_WITH_SET
    | Conformance.GENERAL_PROTECTION
    | Conformance.GENERAL_BLOCK_TRANSFER
    | Conformance.ATTRIBUTE_0_WITH_GET
    | Conformance.ATTRIBUTE_0_WITH_SET
    | Conformance.PRIORITY_MANAGEMENT
    | Conformance.DELTA_VALUE_ENCODING
    | Conformance.DATA_NOTIFICATION
)
