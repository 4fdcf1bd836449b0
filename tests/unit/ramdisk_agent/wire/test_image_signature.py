"""The full-image signature: what the server signs, what a host accepts."""
from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.wire import image_signature, omaha_response
from ramdisk_agent.wire.errors import OmahaInvalid

pytestmark = pytest.mark.unit

KEY = ed25519.Ed25519PrivateKey.generate()
DIGEST = hashlib.sha256(b"image v2").digest()


def test_a_signature_verifies_for_exactly_the_signed_image():
    sig = image_signature.sign(KEY, DIGEST, 4096, "2.0.0")
    image_signature.verify(KEY.public_key(), sig, DIGEST, 4096, "2.0.0")
    for changed in ((hashlib.sha256(b"x").digest(), 4096, "2.0.0"),
                    (DIGEST, 4097, "2.0.0"), (DIGEST, 4096, "2.0.1")):
        with pytest.raises(image_signature.ImageSignatureError, match="does not verify"):
            image_signature.verify(KEY.public_key(), sig, *changed)


def test_another_key_or_no_signature_is_refused():
    sig = image_signature.sign(ed25519.Ed25519PrivateKey.generate(), DIGEST, 1, "1")
    with pytest.raises(image_signature.ImageSignatureError, match="another appliance"):
        image_signature.verify(KEY.public_key(), sig, DIGEST, 1, "1")
    for bad in (None, b"", sig[:63]):
        with pytest.raises(image_signature.ImageSignatureError, match="no 64-byte"):
            image_signature.verify(KEY.public_key(), bad, DIGEST, 1, "1")


def test_a_delta_manifest_signature_cannot_pass_as_an_image_signature():
    # The label binds the purpose: signing the raw digest (as someone might for
    # another format) gives a signature the image check refuses.
    with pytest.raises(image_signature.ImageSignatureError):
        image_signature.verify(KEY.public_key(), KEY.sign(DIGEST), DIGEST, 1, "1")


@pytest.mark.parametrize("args", [(b"short", 1, "1"), (DIGEST, 0, "1"), (DIGEST, 1, ""),
                                  (DIGEST, 1, "v" * 256)])
def test_bad_fields_are_refused_before_signing(args):
    with pytest.raises(image_signature.ImageSignatureError, match="needs a SHA-256"):
        image_signature.sign(KEY, *args)


def _response(signature):
    manifest = omaha_response.Manifest(
        "2.0.0", (omaha_response.Package("img", 4096, sha256=DIGEST),), DIGEST,
        signature=signature)
    check = omaha_response.UpdateCheck("ok", ("http://a/",), manifest)
    return omaha_response.Response((omaha_response.AppResponse("app", updatecheck=check),))


def test_the_signature_travels_in_the_omaha_answer():
    sig = image_signature.sign(KEY, DIGEST, 4096, "2.0.0")
    body = omaha_response.render_response(_response(sig))
    assert b'MetalcastSignature="' in body
    parsed = omaha_response.parse_response(body).apps[0].updatecheck.manifest
    assert parsed.signature == sig
    plain = omaha_response.parse_response(omaha_response.render_response(_response(None)))
    assert plain.apps[0].updatecheck.manifest.signature is None


def test_a_mangled_signature_attribute_is_an_invalid_answer():
    body = omaha_response.render_response(_response(b"\x01" * 64))
    body = body.replace(b'MetalcastSignature="', b'MetalcastSignature="!!')
    with pytest.raises(OmahaInvalid, match="MetalcastSignature"):
        omaha_response.parse_response(body)
