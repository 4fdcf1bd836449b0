"""Omaha event and error codes as Flatcar's update_engine sends them, and a decoder.

An ``<event errorcode="...">`` carries update_engine's ``ActionExitCode``
(``src/update_engine/action_processor.h``): a base code 0-44 naming the stage that
failed, 100 for an incomplete download, 2000 + the HTTP status for an HTTP error, with
flag bits or-ed on top (dev mode, resumed, test image, test Omaha URL). The raw number
is opaque to people (Nebraska#371 shows 268435490), so :func:`decode` splits it:
``decode(268435490).text == "34 OmahaResponseInvalid, with test Omaha URL flag"``.

update_engine prints the code with ``%d`` of a signed int, so the dev-mode flag
(bit 31) arrives as a negative number; :func:`decode` reads it as the unsigned 32-bit
value it is.
"""
from __future__ import annotations

import dataclasses

#: update_engine's ActionExitCode base values (the kActionCode prefix dropped).
ACTION_CODES: dict[int, str] = {
    0: "Success",
    1: "Error",
    2: "OmahaRequestError",
    3: "OmahaResponseHandlerError",
    4: "FilesystemCopierError",
    5: "PostinstallRunnerError",
    6: "SetBootableFlagError",
    7: "InstallDeviceOpenError",
    8: "KernelDeviceOpenError",
    9: "DownloadTransferError",
    10: "PayloadHashMismatchError",
    11: "PayloadSizeMismatchError",
    12: "DownloadPayloadVerificationError",
    13: "DownloadNewPartitionInfoError",
    14: "DownloadWriteError",
    15: "NewRootfsVerificationError",
    16: "NewKernelVerificationError",
    17: "SignedDeltaPayloadExpectedError",
    18: "DownloadPayloadPubKeyVerificationError",
    19: "PostinstallBootedFromFirmwareB",
    20: "DownloadStateInitializationError",
    21: "DownloadInvalidMetadataMagicString",
    22: "DownloadSignatureMissingInManifest",
    23: "DownloadManifestParseError",
    24: "DownloadMetadataSignatureError",
    25: "DownloadMetadataSignatureVerificationError",
    26: "DownloadMetadataSignatureMismatch",
    27: "DownloadOperationHashVerificationError",
    28: "DownloadOperationExecutionError",
    29: "DownloadOperationHashMismatch",
    30: "OmahaRequestEmptyResponseError",
    31: "OmahaRequestXMLParseError",
    32: "DownloadInvalidMetadataSize",
    33: "DownloadInvalidMetadataSignature",
    34: "OmahaResponseInvalid",
    35: "OmahaUpdateIgnoredPerPolicy",
    36: "OmahaUpdateDeferredPerPolicy",
    37: "OmahaErrorInHTTPResponse",
    38: "DownloadOperationHashMissingError",
    39: "DownloadMetadataSignatureMissingError",
    40: "OmahaUpdateDeferredForBackoff",
    41: "PostinstallPowerwashError",
    42: "NewPCRPolicyVerificationError",
    43: "NewPCRPolicyHTTPError",
    44: "RollbackError",
    100: "DownloadIncomplete",
}
#: The base of HTTP errors: 2000 + the status (update_engine caps the status at 999).
HTTP_BASE = 2000
ROLLBACK = 44

#: Flag bits or-ed onto a code, highest first (kSpecialFlags).
FLAGS: dict[int, str] = {
    1 << 31: "dev mode",
    1 << 30: "resumed",
    1 << 29: "test image",
    1 << 28: "test Omaha URL",
}
FLAG_MASK = sum(FLAGS)

#: eventtype values (update_engine OmahaEvent::Type; 800 is Nebraska's).
EVENT_TYPES: dict[int, str] = {
    0: "unknown",
    1: "download complete",
    2: "install complete",
    3: "update complete",
    13: "download started",
    14: "download finished",
    800: "installed, completion prevented by instance",
}
#: eventresult values (OmahaEvent::Result).
EVENT_RESULTS: dict[int, str] = {
    0: "error",
    1: "success",
    2: "success, reboot",
    9: "update deferred",
}
UPDATE_COMPLETE, DOWNLOAD_STARTED, DOWNLOAD_FINISHED, INSTALLED = 3, 13, 14, 800
RESULT_ERROR, RESULT_SUCCESS, RESULT_SUCCESS_REBOOT, RESULT_DEFERRED = 0, 1, 2, 9


@dataclasses.dataclass(frozen=True)
class ErrorCode:
    """A raw error code split into its base code, flags and a line people can read."""

    raw: int
    base: int
    flags: tuple[str, ...]
    name: str

    @property
    def text(self) -> str:
        text = f"{self.base} {self.name}"
        if self.flags:
            noun = "flag" if len(self.flags) == 1 else "flags"
            text += f", with {' and '.join(self.flags)} {noun}"
        return text

    @property
    def is_rollback(self) -> bool:
        return self.base == ROLLBACK


def decode(raw: int) -> ErrorCode:
    """``raw`` (as sent: possibly negative, see the module docstring) decoded."""
    value = raw & 0xFFFFFFFF
    base = value & ~FLAG_MASK
    flags = tuple(name for bit, name in FLAGS.items() if value & bit)
    if base in ACTION_CODES:
        name = ACTION_CODES[base]
    elif HTTP_BASE <= base < HTTP_BASE + 1000:
        name = f"OmahaRequestHTTPResponse {base - HTTP_BASE}"
    else:
        name = "unknown"
    return ErrorCode(value, base, flags, name)
