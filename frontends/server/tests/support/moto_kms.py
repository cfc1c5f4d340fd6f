"""moto's AWS KMS server for the key server's tests, made faithful where
moto 5.2.5 is not:

- MessageType=DIGEST: moto hashes the digest again (getmoto/moto#10202);
  AWS KMS signs the digest as given. Here it is signed as given.
- RSASSA-PSS: AWS KMS uses a salt as long as the digest (as TLS requires);
  moto uses the longest salt. Here the salt is the digest's length.
- An ARN of a key that does not exist: moto fails with a KeyError (HTTP
  500); AWS KMS answers NotFoundException. Here it is NotFoundException.
- GetPublicKey and Sign with a disabled key: moto answers; AWS KMS answers
  DisabledException. Here it is DisabledException.

And two knobs a key's Description turns on, to test the server against a
slow or throttling service with the real SDK:

- "delay-ms=N": every Sign with that key takes N ms longer.
- "throttle=N": the first N Sign calls with that key answer
  ThrottlingException (HTTP 400), as AWS KMS does past its request quota.

Usage: python3 moto_kms.py PORT   (prints "ready" when listening)
"""

import json
import logging
import sys
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from moto.core.exceptions import JsonRESTError
from moto.kms import models, responses
from moto.kms.exceptions import NotFoundException
from moto.kms import utils as kms_utils
from moto.server import ThreadedMotoServer

_request = threading.local()
_throttled = {}
_lock = threading.Lock()


class DisabledException(JsonRESTError):
    def __init__(self, key_id):
        super().__init__("DisabledException", f"{key_id} is disabled.")


class ThrottlingException(JsonRESTError):
    def __init__(self):
        super().__init__("ThrottlingException", "Rate exceeded")


_original_sign = responses.KmsResponse.sign


def _sign(self):
    params = json.loads(self.body)
    key = self.kms_backend.describe_key(params.get("KeyId", ""))
    if not key.enabled:
        raise DisabledException(key.arn)
    knobs = dict(
        part.split("=", 1) for part in (key.description or "").split() if "=" in part
    )
    if "throttle" in knobs:
        with _lock:
            done = _throttled.get(key.id, 0)
            _throttled[key.id] = done + 1
        if done < int(knobs["throttle"]):
            raise ThrottlingException()
    if "delay-ms" in knobs:
        time.sleep(int(knobs["delay-ms"]) / 1000)
    _request.digest = params.get("MessageType") == "DIGEST"
    try:
        return _original_sign(self)
    finally:
        _request.digest = False


def _hash_for(signing_algorithm):
    from cryptography.hazmat.primitives import hashes

    for size in ("256", "384", "512"):
        if signing_algorithm.endswith(size):
            return getattr(hashes, "SHA" + size)()
    raise ValueError(signing_algorithm)


def _rsa_sign(self, message, signing_algorithm):
    kms_utils.validate_signing_algorithm(
        signing_algorithm, kms_utils.SigningAlgorithm.rsa_signing_algorithms()
    )
    digest = _hash_for(signing_algorithm)
    if "PSS" in signing_algorithm:
        pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
    else:
        pad = padding.PKCS1v15()
    algorithm = utils.Prehashed(digest) if getattr(_request, "digest", False) else digest
    return self.private_key.sign(message, pad, algorithm)


def _ecdsa_sign(self, message, signing_algorithm):
    kms_utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
    digest = _hash_for(signing_algorithm)
    algorithm = utils.Prehashed(digest) if getattr(_request, "digest", False) else digest
    return self.private_key.sign(message, ec.ECDSA(algorithm))


_original_describe_key = models.KmsBackend.describe_key


def _describe_key(self, key_id):
    try:
        return _original_describe_key(self, key_id)
    except KeyError:
        raise NotFoundException(f"Key '{key_id}' does not exist")


_original_get_public_key = models.KmsBackend.get_public_key


def _get_public_key(self, key_id):
    key = self.describe_key(key_id)
    if not key.enabled:
        raise DisabledException(key.arn)
    return _original_get_public_key(self, key_id)


models.KmsBackend.describe_key = _describe_key
models.KmsBackend.get_public_key = _get_public_key
responses.KmsResponse.sign = _sign
kms_utils.RSAPrivateKey.sign = _rsa_sign
kms_utils.ECDSAPrivateKey.sign = _ecdsa_sign

if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
    server.start()
    print("ready", flush=True)
    threading.Event().wait()
