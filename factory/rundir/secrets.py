"""Secret values the factory must never store, and the functions that keep them out.

A secret is the value of an environment variable named by an engine's `api_key_env`, the value of a
secret-looking mapping key (`engine_kwargs.api_key`, `...token`, `...password`), or the credentials
written into a URL such as `engine.base_url` (https://user:pass@host/v1). The config holds only the
variable's name; these helpers keep the value out of every stored string (samples.error, judge raw
text, manifest, logs).

    >>> secrets = secret_values(cfg)          # reads the environment variables the config names
    >>> scrub("HTTP 401: Incorrect API key provided: sk-live-123", secrets)
    'HTTP 401: Incorrect API key provided: ***'
    >>> redact_url("https://alice:hunter22@api.example.com/v1")
    'https://***@api.example.com/v1'

Values shorter than MIN_SECRET_LENGTH characters are not scrubbed: no real key is that short, and
replacing every "ab" in a judge's text would garble the data without hiding anything.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4
# Mapping keys whose value is a secret (engine_kwargs.api_key, ...); `api_key_env` holds a name, not a value.
SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password)$", re.IGNORECASE)


def url_credentials(url: str) -> set[str]:
    """The secret parts of a URL's user info: the password (as written, decoded, and as the Basic
    auth token a server may echo), or the user name when it stands alone (a token used as user)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return set()
    if "@" not in parts.netloc:
        return set()
    userinfo = parts.netloc.rpartition("@")[0]
    user, has_password, password = userinfo.partition(":")
    secret = password if has_password else user
    if not secret:
        return set()
    found = {secret, urllib.parse.unquote(secret)}
    plain = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    found.add(base64.b64encode(plain.encode()).decode())
    return found


def redact_url(url: str) -> str:
    """`url` with any user info replaced by ***: https://user:pass@host:8000/v1 -> https://***@host:8000/v1."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def secret_values(*configs: Any, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Every secret value the given configs point at: for each `api_key_env` (at any depth, in a
    RunConfig, an EngineConfig or a plain dict of either), the value of that environment variable;
    the credentials in any `base_url`; the value of any secret-looking key (engine_kwargs.api_key)."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()

    def walk(node: Any) -> None:
        if is_dataclass(node) and not isinstance(node, type):
            node = {f.name: getattr(node, f.name) for f in fields(node)}
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "api_key_env":
                    if isinstance(value, str) and value:
                        found.add(environ.get(value, ""))
                elif key == "base_url" and isinstance(value, str):
                    found.update(url_credentials(value))
                elif isinstance(value, str) and SECRET_KEY.search(str(key)):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    for config in configs:
        walk(config)
    return frozenset(value for value in found if len(value) >= MIN_SECRET_LENGTH)


def redact(value: Any) -> Any:
    """The config as stored: any mapping key that looks like a secret has its value masked, and
    credentials written into a URL (https://user:pass@host) are too."""
    if isinstance(value, dict):
        return {
            k: (MASK if SECRET_KEY.search(str(k)) and k != "api_key_env" and v else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact_url(value)
    return value


def stored_config(cfg: Any) -> dict:
    """The config as every output shows it (manifest.json, the page): secret-looking keys masked, and every
    secret value the config points at scrubbed from the values, such as a header or a URL that interpolates
    the API key's variable (`${oc.env:OPENAI_API_KEY}`)."""
    from factory.config import to_dict

    return scrub_all(redact(to_dict(cfg)), secret_values(cfg))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by ***; the longest first, so a secret that contains
    another is masked whole. None and '' pass through."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_all(value: Any, secrets: Iterable[str]) -> Any:
    """Every string in a JSON-like tree (dicts, lists), keys included, scrubbed: for a manifest or a
    metrics dict before it is written."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {scrub_all(k, secrets): scrub_all(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_all(v, secrets) for v in value]
    return value


def scrub_table(table: Any, secrets: Iterable[str]) -> Any:
    """An Arrow table with every secret value masked in its string columns (vectorized): what the
    executor's writers apply to every part before it is stored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    secrets = sorted((s for s in secrets if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)
    if not secrets:
        return table
    for index, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        column = table.column(index)
        for secret in secrets:
            column = pc.replace_substring(column, pattern=secret, replacement=MASK)
        table = table.set_column(index, field, column)
    return table


__all__ = [
    "MASK",
    "redact",
    "redact_url",
    "scrub",
    "scrub_all",
    "scrub_table",
    "secret_values",
    "stored_config",
    "url_credentials",
]
