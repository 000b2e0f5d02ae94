"""User data: spotwatch takes the part addressed to it and ignores everything else, quietly."""

from __future__ import annotations

import gzip
import os
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import List

import pytest

from spotwatch.config.userdata import MAX_DECOMPRESSED_BYTES, extract_spotwatch_section

CLOUD_CONFIG = b"""#cloud-config
packages: [jq]
runcmd:
  - echo secret-token-123 > /root/token
spotwatch:
  poll_interval: 2s
  hooks:
    - name: save
      command: /usr/local/bin/save
"""
EXPECTED = {"poll_interval": "2s", "hooks": [{"name": "save", "command": "/usr/local/bin/save"}]}

SPOTWATCH_CONFIG = b"""#spotwatch-config
poll_interval: 2s
hooks:
  - name: save
    command: /usr/local/bin/save
"""

SHELL_SCRIPT = b"#!/bin/bash\necho secret-token-123 > /root/token\n"


def mime_archive(parts: List[MIMEBase], *, as_bytes_of: str = "utf-8") -> bytes:
    """Build user data the way cloud-init's write-mime-multipart does."""
    archive = MIMEMultipart()
    for part in parts:
        archive.attach(part)
    return archive.as_string().encode(as_bytes_of)


def text_part(body: bytes, subtype: str, charset: str = "us-ascii") -> MIMEText:
    return MIMEText(body.decode(), subtype, charset)


def test_cloud_config_spotwatch_section_is_taken() -> None:
    """A #cloud-config document's top-level `spotwatch:` mapping is the spotwatch layer."""
    section, note = extract_spotwatch_section(CLOUD_CONFIG)
    assert section == EXPECTED
    assert "#cloud-config" in note


def test_spotwatch_config_document_is_taken_whole() -> None:
    """With `#spotwatch-config` as its first line, the whole document is spotwatch config."""
    section, note = extract_spotwatch_section(SPOTWATCH_CONFIG)
    assert section == EXPECTED
    assert "#spotwatch-config" in note


@pytest.mark.parametrize("document", [CLOUD_CONFIG, SPOTWATCH_CONFIG])
def test_gzip_compressed_documents_are_read(document: bytes) -> None:
    """EC2 user data is often gzipped to fit 16 KB; either kind is read through gzip."""
    section, note = extract_spotwatch_section(gzip.compress(document))
    assert section == EXPECTED
    assert note.startswith("gzip-compressed")


def test_mime_archive_with_cloud_config_and_script_parts() -> None:
    """In a multipart archive the cloud-config part is found among shell-script parts."""
    raw = mime_archive(
        [text_part(SHELL_SCRIPT, "x-shellscript"), text_part(CLOUD_CONFIG, "cloud-config")]
    )
    section, note = extract_spotwatch_section(raw)
    assert section == EXPECTED
    assert "MIME" in note


def test_mime_archive_with_base64_encoded_parts() -> None:
    """Parts with Content-Transfer-Encoding: base64 (utf-8 text) are decoded first."""
    part = text_part(SPOTWATCH_CONFIG, "plain", charset="utf-8")
    raw = mime_archive([text_part(SHELL_SCRIPT, "x-shellscript", "utf-8"), part])
    assert b"Content-Transfer-Encoding: base64" in raw
    assert b"poll_interval" not in raw
    section, _ = extract_spotwatch_section(raw)
    assert section == EXPECTED


def test_mime_archive_with_a_gzip_part() -> None:
    """A gzip-compressed part (application/x-gzip, base64) holding #cloud-config is read."""
    gz_part = MIMEApplication(gzip.compress(CLOUD_CONFIG), "x-gzip")
    raw = mime_archive([text_part(SHELL_SCRIPT, "x-shellscript"), gz_part])
    section, note = extract_spotwatch_section(raw)
    assert section == EXPECTED
    assert "gzip" in note


def test_gzip_compressed_mime_archive() -> None:
    """write-mime-multipart --gzip compresses the whole archive; that is read too."""
    raw = mime_archive([text_part(CLOUD_CONFIG, "cloud-config")])
    section, _ = extract_spotwatch_section(gzip.compress(raw))
    assert section == EXPECTED


def test_mime_archive_without_spotwatch_part_is_ignored() -> None:
    """A MIME archive of only scripts and foreign cloud-config yields nothing."""
    raw = mime_archive(
        [
            text_part(SHELL_SCRIPT, "x-shellscript"),
            text_part(b"#cloud-config\npackages: [jq]\n", "cloud-config"),
        ]
    )
    section, note = extract_spotwatch_section(raw)
    assert section is None
    assert "2 part(s)" in note


def test_empty_spotwatch_section_changes_nothing() -> None:
    """`spotwatch:` with everything commented out is an empty layer, not an error."""
    section, _ = extract_spotwatch_section(b"#cloud-config\nspotwatch:\n#  dry_run: true\n")
    assert section == {}


IGNORED = {
    "shell script": SHELL_SCRIPT,
    "empty": b"",
    "whitespace": b"  \n",
    "random bytes": os.urandom(64) + b"\xff\xfe",
    "truncated gzip": gzip.compress(CLOUD_CONFIG)[:20],
    "corrupt gzip": b"\x1f\x8b\x08\x00" + b"\x00" * 40,
    "broken MIME": b"Content-Type: multipart/mixed\nMIME-Version: 1.0\n\n--x\nnonsense",
    "MIME with unterminated parts": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n',
    "cloud-config without spotwatch": b"#cloud-config\npackages: [jq]\n",
    "cloud-config not a mapping": b"#cloud-config\n- a\n- b\n",
    "cloud-config bad YAML": b"#cloud-config\nspotwatch: {poll_interval: [\n",
    "spotwatch not a mapping": b"#cloud-config\nspotwatch: [poll_interval]\n",
    "spotwatch-config not a mapping": b"#spotwatch-config\njust a string\n",
    "plain YAML without a marker": b"spotwatch:\n  dry_run: true\n",
    "include list": b"#include\nhttps://example.com/secret-token-123\n",
}


@pytest.mark.parametrize("raw", IGNORED.values(), ids=IGNORED.keys())
def test_anything_else_is_ignored_with_a_reason_and_never_raises(raw: bytes) -> None:
    """Other user data yields (None, reason); the reason never echoes the user data."""
    section, note = extract_spotwatch_section(raw)
    assert section is None
    assert note and "\n" not in note
    assert "secret-token-123" not in note


def test_notes_never_contain_the_user_data() -> None:
    """Even a used section's description names its kind only, not its content."""
    for raw in (CLOUD_CONFIG, SPOTWATCH_CONFIG, gzip.compress(CLOUD_CONFIG)):
        _, note = extract_spotwatch_section(raw)
        assert "secret" not in note and "poll_interval" not in note


def test_gzip_bombs_are_refused() -> None:
    """Decompression stops at MAX_DECOMPRESSED_BYTES instead of filling memory."""
    bomb = gzip.compress(b"#spotwatch-config\n" + b"#" * (MAX_DECOMPRESSED_BYTES + 1024))
    assert len(bomb) < 64 * 1024
    section, note = extract_spotwatch_section(bomb)
    assert section is None
    assert "inflates past" in note
