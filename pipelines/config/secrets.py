"""Credentials inside any text visionray writes (params, config.yaml, tags, the terminal), masked.

A URI can carry a password (``postgresql://mlflow:PASSWORD@db/mlflow``, ``http://user:PASSWORD@mlflow``),
a token as its user (``https://TOKEN@host``) or in its query (``s3://b/k?X-Amz-Signature=…``,
``?token=…``); any config key can hold one (``tracking.uri``, ``cluster.address``, ``retrain.init_from``,
``transfer.source``, ``data.path``). Masking is by shape, not by key name, so a new key is covered::

    mask("tracking.uri=http://admin:hunter2@mlflow:5000")   # 'tracking.uri=http://admin:***@mlflow:5000'
    mask_key("train.api_key", "abc")                          # '***' (the key's name says it is secret)
"""

from __future__ import annotations

import re

MASK = "***"
#: a key whose name says its value is secret: the whole value is masked
SECRET_KEY = re.compile(r"(token|password|passwd|secret|api[_-]?key|credential)", re.IGNORECASE)
# scheme://user:password@ → the password; scheme://LONGTOKEN@ (no colon, ≥ 16 characters) → the token
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'\"]*):(?P<secret>[^@\s/'\"]+)@")
_TOKEN_USER = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<secret>[^/\s:@'\"]{16,})@")
# ?token=…, &password=…, X-Amz-Signature=…, sig=… in a query string
_QUERY = re.compile(r"(?P<head>[?&;](?:[A-Za-z0-9_\-]*(?:token|password|passwd|secret|signature|credential"
                    r"|api[_-]?key|access[_-]?key)[A-Za-z0-9_\-]*|sig|key)=)(?P<secret>[^&\s'\"#]+)", re.IGNORECASE)


def mask(text: str) -> str:
    """``text`` with every credential inside a URI replaced by ``***`` (the rest left as it was)."""
    if "://" not in text and "=" not in text:
        return text
    text = _PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _TOKEN_USER.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def mask_key(key: str, value: str) -> str:
    """A config value for logging: all of it masked when the key names a secret, else its URIs masked."""
    return MASK if SECRET_KEY.search(key) else mask(value)
