"""Find the spotwatch settings in EC2 user data, whatever else the user data is for.

User data belongs to the operator's whole boot process (cloud-init, shell scripts), so
spotwatch only takes what is clearly addressed to it and quietly ignores the rest. It is
untrusted input from our point of view: nothing here raises, decompression is capped, and
descriptions never quote the user data (it often holds secrets).
"""

from __future__ import annotations

import email
import email.message
import zlib
from typing import Any, Dict, List, Optional, Tuple

import yaml

from spotwatch.config import yamltext

MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
"""EC2 caps raw user data at 16 KB; anything inflating past this is a gzip bomb, not config."""

CLOUD_CONFIG = "#cloud-config"
SPOTWATCH_CONFIG = "#spotwatch-config"
_GZIP_MAGIC = b"\x1f\x8b"
# Markers cloud-init knows; named in the description so the info line says what it saw.
_OTHER_KINDS = {
    "#!": "a script",
    "#include": "an #include list",
    "#cloud-boothook": "a cloud-boothook",
    "#part-handler": "a part-handler",
    "#upstart-job": "an upstart job",
    "## template: jinja": "a jinja template",
}

Section = Optional[Dict[str, Any]]


class _Skip(Exception):
    """This user data holds no usable spotwatch section; the message says why."""


def extract_spotwatch_section(raw: bytes) -> Tuple[Section, str]:
    """Return (the spotwatch settings mapping or None, a one-line description for the log).

    Understood: `#cloud-config` YAML with a top-level `spotwatch:` mapping; YAML whose first
    line is `#spotwatch-config` (the whole document is spotwatch's); either of those
    gzip-compressed; a MIME multipart archive (cloud-init's write-mime-multipart) holding
    such a part, base64 or gzip inside or not. The mapping is not validated here.
    """
    try:
        return _from_document(raw, depth=0)
    except _Skip as skip:
        return None, str(skip)
    except Exception as error:  # untrusted input: a parser bug must not stop the daemon
        return None, f"user data ignored: could not be read ({type(error).__name__})"


def _from_document(raw: bytes, depth: int) -> Tuple[Section, str]:
    if not raw.strip():
        raise _Skip("user data is empty")
    if raw.startswith(_GZIP_MAGIC):
        if depth > 0:
            raise _Skip("user data is gzip inside gzip; not read")
        section, description = _from_document(_gunzip(raw), depth + 1)
        return section, f"gzip-compressed {description}"
    text = _decode(raw)
    first_line = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    if first_line == CLOUD_CONFIG:
        return _from_cloud_config(text, "#cloud-config user data")
    if first_line == SPOTWATCH_CONFIG:
        return _from_spotwatch_config(text, "#spotwatch-config user data")
    if _looks_like_mime(text):
        return _from_mime(raw)
    for marker, kind in _OTHER_KINDS.items():
        if first_line.startswith(marker):
            raise _Skip(f"user data is {kind} ({len(raw)} bytes), no spotwatch section")
    raise _Skip(
        f"user data ({len(raw)} bytes) is neither #cloud-config, #spotwatch-config "
        "nor a MIME archive; ignored"
    )


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES + 1)
    except zlib.error:
        raise _Skip("gzip-compressed user data is corrupt; ignored") from None
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise _Skip(
            f"gzip-compressed user data inflates past {MAX_DECOMPRESSED_BYTES} bytes; ignored"
        )
    if not inflater.eof:
        raise _Skip("gzip-compressed user data is truncated; ignored")
    return out


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Skip(f"user data is binary ({len(raw)} bytes), not text; ignored") from None


def _load_yaml(text: str, what: str) -> Any:
    try:
        return yamltext.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        if isinstance(error, yamltext.TooDeep):  # our own words, no user data in them
            raise _Skip(f"{what} is {error.problem}{where}; ignored") from None
        raise _Skip(f"{what} is not valid YAML{where}; ignored") from None


def _from_cloud_config(text: str, what: str) -> Tuple[Section, str]:
    document = _load_yaml(text, what)
    if not isinstance(document, dict):
        raise _Skip(f"{what} is not a YAML mapping; ignored")
    if "spotwatch" not in document:
        raise _Skip(f"{what} has no spotwatch: section")
    return _section_mapping(document["spotwatch"], f"the spotwatch: section of {what}")


def _from_spotwatch_config(text: str, what: str) -> Tuple[Section, str]:
    return _section_mapping(_load_yaml(text, what), what)


def _section_mapping(value: Any, what: str) -> Tuple[Section, str]:
    if value is None:  # present with every line commented out: nothing to change
        return {}, f"{what} (empty)"
    if not isinstance(value, dict):
        raise _Skip(f"{what} is not a mapping; ignored")
    return value, what


def _looks_like_mime(text: str) -> bool:
    head = text.lstrip()[:1024].lower()
    return head.startswith(("content-type:", "mime-version:")) and "content-type:" in head


def _from_mime(raw: bytes) -> Tuple[Section, str]:
    message = email.message_from_bytes(raw)
    parts = [part for part in message.walk() if not part.is_multipart()]
    if message.get_content_maintype() == "multipart" and not message.is_multipart():
        raise _Skip("user data is a MIME archive that could not be parsed; ignored")
    found: List[Tuple[Dict[str, Any], str]] = []
    for index, part in enumerate(parts, start=1):
        usable = _from_mime_part(part, f"MIME part {index} ({part.get_content_type()})")
        if usable is not None:
            found.append(usable)
    if not found:
        raise _Skip(f"user data is a MIME archive of {len(parts)} part(s), none for spotwatch")
    section, description = found[0]
    extra = f"; {len(found) - 1} later spotwatch parts ignored" if len(found) > 1 else ""
    return section, f"{description} of a MIME archive{extra}"


def _from_mime_part(part: email.message.Message, what: str) -> Optional[Tuple[Dict[str, Any], str]]:
    """The part's spotwatch section, or None when the part is not for us or unusable."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload.strip():
        return None
    try:
        if payload.startswith(_GZIP_MAGIC):
            payload = _gunzip(payload)
            what = f"gzip-compressed {what}"
        text = _decode(payload)
        first_line = text.lstrip("\ufeff").split("\n", 1)[0].strip()
        if first_line == SPOTWATCH_CONFIG:
            section, description = _from_spotwatch_config(text, what)
        elif part.get_content_type() == "text/cloud-config" or first_line == CLOUD_CONFIG:
            section, description = _from_cloud_config(text, what)
        else:
            return None
    except _Skip:
        return None
    return (section, description) if section is not None else None
