"""Contract checks for HTTP requests sent to commercetools Composable Commerce.

Requests are validated against the official OpenAPI 3.0 file that lives beside
the repository at ``<repo>/../shared/commercetools/openapi.yaml``:

* the path must match one of the spec's path templates (literal segments such
  as ``key={key}`` or ``replicate`` win over a bare ``{ID}``),
* the HTTP method must be declared for that path,
* every query parameter name must be declared for the operation (names written
  as ``/regex/`` in the spec, e.g. ``/^var[.][a-zA-Z0-9]+$/``, are matched as
  regular expressions) and scalar values must fit the parameter's type,
* a JSON body is validated against the operation's ``requestBody`` schema with
  full ``$ref`` resolution.

Discriminated unions: the spec does not use ``oneOf``/``anyOf`` for them.  A
base schema (e.g. ``CartUpdateAction``) carries an OpenAPI ``discriminator``
with an explicit ``mapping`` (``addPayment`` ->
``#/components/schemas/CartAddPaymentAction``) and every subtype is written as
``allOf: [{$ref: base}, {own properties}]``.  Plain JSON Schema ignores
``discriminator``, so :func:`_build_schema_root` rewrites the schemas: the base
becomes ``allOf: [<base without discriminator>, {required: [prop], prop in
mapping keys}, if prop == k then $ref subtype ...]`` and each subtype's
``allOf`` points at the discriminator-free base (otherwise base -> subtype ->
base would recurse forever).  An unknown ``action`` therefore fails with an
``enum`` error and a known one is validated against exactly its subtype.

Usage in tests::

    recorder = RequestRecorder()
    client = httpx.AsyncClient(event_hooks={"request": [recorder]})
    ...
    recorder.assert_all_valid()
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = (REPO_ROOT / ".." / "shared" / "commercetools" / "openapi.yaml").resolve()
CACHE_DIR = REPO_ROOT / ".local" / "openapi-cache"
# Bump when the cached representation changes.
_CACHE_FORMAT = 1
# A parsed copy is cached when the YAML parse itself takes longer than this.
_CACHE_THRESHOLD_S = 3.0

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

#: Seconds the last real (uncached by lru_cache) load_spec() call took, and how.
LAST_LOAD: dict[str, Any] = {}


class ContractViolation(AssertionError):
    """A request does not conform to the commercetools OpenAPI contract."""


class SpecNotFound(FileNotFoundError):
    """The OpenAPI file is missing; tests must fail, not skip."""


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def _yaml_loader() -> type:
    # libyaml's C loader is ~10x faster than the pure Python one.
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _cache_file(stat: os.stat_result) -> Path:
    return CACHE_DIR / f"openapi-v{_CACHE_FORMAT}-{stat.st_mtime_ns}-{stat.st_size}.json"


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """Parse the OpenAPI file (cached per process, and on disk when slow)."""
    if not SPEC_PATH.is_file():
        raise SpecNotFound(
            f"commercetools OpenAPI spec not found at {SPEC_PATH} (expected <repo>/../shared/commercetools/openapi.yaml)"
        )
    started = time.perf_counter()
    stat = SPEC_PATH.stat()
    cache = _cache_file(stat)
    if cache.is_file():
        try:
            with cache.open("rb") as fh:
                spec = json.load(fh)
            LAST_LOAD.update(seconds=time.perf_counter() - started, source=str(cache))
            return spec
        except (OSError, ValueError):
            pass  # corrupt cache: fall through to a fresh parse
    with SPEC_PATH.open("rb") as fh:
        spec = yaml.load(fh, Loader=_yaml_loader())
    elapsed = time.perf_counter() - started
    LAST_LOAD.update(seconds=elapsed, source=str(SPEC_PATH), loader=_yaml_loader().__name__)
    if not isinstance(spec, dict) or not str(spec.get("openapi", "")).startswith("3."):
        raise ContractViolation(f"{SPEC_PATH} is not an OpenAPI 3.x document")
    if elapsed > _CACHE_THRESHOLD_S:
        _write_cache(cache, spec)
    return spec


def _write_cache(cache: Path, spec: dict[str, Any]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        for old in cache.parent.glob("openapi-v*.json"):
            if old != cache:
                old.unlink(missing_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(spec, fh, default=str, separators=(",", ":"))
        os.replace(tmp, cache)
    except OSError:
        pass  # read-only checkout: caching is an optimisation only


# --------------------------------------------------------------------------- #
# Schema preparation (discriminators -> JSON Schema)
# --------------------------------------------------------------------------- #

_SCHEMAS_PREFIX = "#/components/schemas/"
_BASE_SUFFIX = "__discriminator_base"


def _find_discriminator(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Return (holder, discriminator) for a schema's own discriminator, if any.

    The discriminator sits either at the top level (``CartUpdateAction``) or in
    one of the schema's ``allOf`` members (``TypedMoneyDraft``).
    """
    if isinstance(schema.get("discriminator"), dict):
        return schema, schema["discriminator"]
    for member in schema.get("allOf", ()):
        if isinstance(member, dict) and isinstance(member.get("discriminator"), dict):
            return member, member["discriminator"]
    return None


def _is_regex_name(name: Any) -> bool:
    return isinstance(name, str) and len(name) > 2 and name.startswith("/") and name.endswith("/")


def _oas30_to_jsonschema(node: Any) -> Any:
    """Minimal OpenAPI 3.0 -> JSON Schema draft 7 fix-ups (``nullable``)."""
    if isinstance(node, dict):
        out = {k: _oas30_to_jsonschema(v) for k, v in node.items()}
        # RAML-generated pattern properties: names written as "/regex/" appear
        # in ``properties`` / ``required`` (e.g. LocalizedString requires
        # "/^[a-z]{2}(-[A-Z]{2})?$/").  They are patterns, not literal keys.
        if isinstance(out.get("required"), list):
            required = [r for r in out["required"] if not _is_regex_name(r)]
            if required:
                out["required"] = required
            else:
                del out["required"]
        props = out.get("properties")
        if isinstance(props, dict) and any(_is_regex_name(k) for k in props):
            patterns = out.setdefault("patternProperties", {})
            for key in [k for k in props if _is_regex_name(k)]:
                patterns[key[1:-1]] = props.pop(key)
        if out.pop("nullable", False) is True and "type" in out:
            t = out["type"]
            out["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
        return out
    if isinstance(node, list):
        return [_oas30_to_jsonschema(v) for v in node]
    return node


#: Rules the API enforces at run time that the spec file cannot express.  They
#: are added (``allOf``) to the named schema; keep this list short and justified.
SUPPLEMENTS: dict[str, dict[str, Any]] = {
    # The spec marks both ``id`` (deprecated) and ``cart`` optional because
    # either may be given; a draft with neither is rejected by the API.
    "OrderFromCartDraft": {"anyOf": [{"required": ["cart"]}, {"required": ["id"]}]},
}


@functools.lru_cache(maxsize=1)
def _build_schema_root() -> dict[str, Any]:
    schemas: dict[str, Any] = _oas30_to_jsonschema(copy.deepcopy(load_spec().get("components", {}).get("schemas", {})))
    for name, rule in SUPPLEMENTS.items():
        if name in schemas:
            schemas[name] = {"allOf": [schemas[name], rule]}
    discriminated = {name: found for name, s in schemas.items() if isinstance(s, dict) and (found := _find_discriminator(s))}
    for name, (holder, disc) in discriminated.items():
        prop = disc["propertyName"]
        mapping: dict[str, str] = disc.get("mapping") or {}
        if not mapping:  # implicit mapping: value == schema name
            mapping = {
                n: _SCHEMAS_PREFIX + n
                for n, s in schemas.items()
                if any(m.get("$ref") == _SCHEMAS_PREFIX + name for m in s.get("allOf", ()) if isinstance(m, dict))
            }
        holder.pop("discriminator")
        base_ref = _SCHEMAS_PREFIX + name + _BASE_SUFFIX
        # Subtypes extend the discriminator-free base, never the dispatcher.
        for target in mapping.values():
            sub = schemas.get(target.removeprefix(_SCHEMAS_PREFIX))
            if isinstance(sub, dict):
                for member in sub.get("allOf", ()):
                    if isinstance(member, dict) and member.get("$ref") == _SCHEMAS_PREFIX + name:
                        member["$ref"] = base_ref
        schemas[name + _BASE_SUFFIX] = schemas[name]
        schemas[name] = {
            "allOf": [
                {"$ref": base_ref},
                {
                    "type": "object",
                    "required": [prop],
                    "properties": {prop: {"enum": sorted(mapping)}},
                },
                *(
                    {
                        "if": {"properties": {prop: {"const": value}}, "required": [prop]},
                        "then": {"$ref": target},
                    }
                    for value, target in sorted(mapping.items())
                ),
            ],
            "x-discriminator": {"propertyName": prop, "base": name},
        }
    return {"components": {"schemas": schemas}}


@functools.cache
def _validator_for(ref: str) -> jsonschema.protocols.Validator:
    root = dict(_build_schema_root())
    root["$ref"] = ref  # draft 7: siblings of $ref are ignored, like OAS 3.0
    return jsonschema.Draft7Validator(root)


def _schema_ref_or_inline(schema: dict[str, Any]) -> str:
    if "$ref" in schema and schema["$ref"].startswith(_SCHEMAS_PREFIX):
        return schema["$ref"]
    # inline request schema: register it under a synthetic name
    key = "__inline__" + str(abs(hash(json.dumps(schema, sort_keys=True))))
    root = _build_schema_root()
    root["components"]["schemas"].setdefault(key, _oas30_to_jsonschema(schema))
    return _SCHEMAS_PREFIX + key


def validate_schema(instance: Any, schema_name: str) -> None:
    """Validate ``instance`` against ``#/components/schemas/<schema_name>``."""
    if schema_name not in load_spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH}")
    _raise_errors(_validator_for(_SCHEMAS_PREFIX + schema_name), instance, f"schema {schema_name}")


def _leaf_errors(error: jsonschema.ValidationError) -> Iterable[jsonschema.ValidationError]:
    if error.context:
        for sub in error.context:
            yield from _leaf_errors(sub)
    else:
        yield error


def _raise_errors(validator: jsonschema.protocols.Validator, instance: Any, what: str) -> None:
    errors = list(validator.iter_errors(instance))
    if not errors:
        return
    leaves = sorted(
        {(e.json_path, e.validator, e.message) for top in errors for e in _leaf_errors(top)},
        key=lambda t: (-t[0].count(".") - t[0].count("["), t[0], t[2]),
    )
    lines = [f"{path}: {message} [{keyword}]" for path, keyword, message in leaves[:20]]
    more = f"\n  ... and {len(leaves) - 20} more" if len(leaves) > 20 else ""
    raise ContractViolation(f"{what}: body does not match the schema:\n  " + "\n  ".join(lines) + more)


# --------------------------------------------------------------------------- #
# Paths and operations
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Template:
    template: str
    segments: tuple[re.Pattern[str], ...]
    score: tuple[int, ...]  # per segment: 2 literal, 1 literal+param, 0 bare param


_PARAM_RE = re.compile(r"\{([^}/]+)\}")


def _compile_segment(seg: str) -> tuple[re.Pattern[str], int]:
    parts = _PARAM_RE.split(seg)  # literal, name, literal, name, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else "([^/]+)" for i, p in enumerate(parts))
    if len(parts) == 1:
        rank = 2
    elif any(parts[0::2]):
        rank = 1
    else:
        rank = 0
    return re.compile(regex + r"\Z"), rank


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[_Template, ...]:
    out = []
    for template in load_spec()["paths"]:
        compiled = [_compile_segment(s) for s in template.strip("/").split("/")]
        out.append(_Template(template, tuple(c[0] for c in compiled), tuple(c[1] for c in compiled)))
    return tuple(out)


def match_path(path: str) -> str:
    """Return the most specific spec path template matching a concrete path."""
    segments = [unquote(s) for s in path.strip("/").split("/")]
    best: _Template | None = None
    for tpl in _templates():
        if len(tpl.segments) != len(segments):
            continue
        if all(rx.match(seg) for rx, seg in zip(tpl.segments, segments, strict=True)) and (
            best is None or tpl.score > best.score
        ):
            best = tpl
    if best is None:
        raise ContractViolation(f"no path in the commercetools API spec matches {path!r}")
    return best.template


def is_api_request(url: str) -> bool:
    """False for calls to the OAuth/auth host (``.../oauth/token`` etc.)."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    return not ("oauth" in segments or (parts.hostname is not None and parts.hostname.startswith("auth.")))


def _query_params(operation: dict[str, Any], path_item: dict[str, Any]) -> list[dict[str, Any]]:
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for p in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
        params[(p.get("name"), p.get("in"))] = p  # operation-level overrides
    return [p for (_, where), p in params.items() if where == "query"]


def _param_matches(name: str, declared: str) -> bool:
    if _is_regex_name(declared):
        return re.search(declared[1:-1], name) is not None
    return name == declared


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    t = schema.get("type")
    if t == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    if t == "number":
        try:
            return float(value)
        except ValueError:
            return value
    if t == "boolean":
        return {"true": True, "false": False}.get(value, value)
    return value


def _check_query(template: str, method: str, operation: dict, path_item: dict, query: str) -> None:
    declared = _query_params(operation, path_item)
    pairs = parse_qsl(query, keep_blank_values=True)
    seen = set()
    for name, value in pairs:
        param = next((p for p in declared if _param_matches(name, p["name"])), None)
        if param is None:
            allowed = sorted(p["name"] for p in declared)
            raise ContractViolation(f"{method.upper()} {template}: query parameter {name!r} is not declared; allowed: {allowed}")
        seen.add(param["name"])
        schema = param.get("schema") or {}
        if schema.get("type") == "array":
            schema = schema.get("items") or {}
        schema = _oas30_to_jsonschema(schema)
        if schema:
            validator = _validator_for(schema["$ref"]) if "$ref" in schema else jsonschema.Draft7Validator(schema)
            try:
                _raise_errors(validator, _coerce(value, _resolve(schema)), "value")
            except ContractViolation as exc:
                raise ContractViolation(
                    f"{method.upper()} {template}: query parameter {name}={value!r} is invalid: {exc}"
                ) from None
    for p in declared:
        if p.get("required") and p["name"] not in seen:
            raise ContractViolation(f"{method.upper()} {template}: required query parameter {p['name']!r} missing")


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema and schema["$ref"].startswith(_SCHEMAS_PREFIX):
        schema = load_spec()["components"]["schemas"][schema["$ref"].removeprefix(_SCHEMAS_PREFIX)]
    return schema


# --------------------------------------------------------------------------- #
# Requests
# --------------------------------------------------------------------------- #


def _validate_oauth(method: str, parts: Any, body: bytes | dict | None, content_type: str | None) -> None:
    if not parts.path.rstrip("/").endswith("/oauth/token"):
        raise ContractViolation(f"unsupported OAuth endpoint {parts.path!r} (only /oauth/token is checked)")
    if method.upper() != "POST":
        raise ContractViolation(f"OAuth token request must be POST, got {method.upper()}")
    if isinstance(body, dict):
        form = {k: str(v) for k, v in body.items()}
    else:
        if content_type and not content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            raise ContractViolation(f"OAuth token request must be form-encoded, got {content_type!r}")
        form = dict(parse_qsl((body or b"").decode("utf-8"), keep_blank_values=True))
        form.update(parse_qsl(parts.query, keep_blank_values=True))
    if form.get("grant_type") != "client_credentials":
        raise ContractViolation(f"OAuth token request: grant_type must be 'client_credentials', got {form.get('grant_type')!r}")
    unknown = set(form) - {"grant_type", "scope"}
    if unknown:
        raise ContractViolation(f"OAuth token request: unexpected form fields {sorted(unknown)}")


def validate_request(
    method: str,
    url: str,
    body: bytes | dict | list | None,
    content_type: str | None = None,
) -> None:
    """Raise :class:`ContractViolation` unless the request fits the API spec."""
    parts = urlsplit(url)
    if not is_api_request(url):
        _validate_oauth(method, parts, body, content_type)
        return
    spec = load_spec()
    template = match_path(parts.path)
    path_item = spec["paths"][template]
    operation = path_item.get(method.lower())
    if method.lower() not in HTTP_METHODS or not isinstance(operation, dict):
        declared = sorted(m.upper() for m in path_item if m in HTTP_METHODS)
        raise ContractViolation(f"{method.upper()} is not declared for {template} (declared: {declared})")
    _check_query(template, method, operation, path_item, parts.query)

    where = f"{method.upper()} {template}"
    if body is None or body == b"" or body == "":
        if (operation.get("requestBody") or {}).get("required"):
            raise ContractViolation(f"{where}: request body is required")
        return
    request_body = operation.get("requestBody")
    if not request_body:
        raise ContractViolation(f"{where}: operation declares no request body but one was sent")
    content = request_body.get("content", {})
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media not in content and "*/*" not in content:
        raise ContractViolation(f"{where}: content type {media!r} not accepted (declared: {sorted(content)})")
    media_obj = content.get(media) or content.get("*/*") or {}
    if media != "application/json" and not media.endswith("+json"):
        return  # non-JSON bodies (images, forms) are only checked for content type
    if isinstance(body, (bytes, bytearray, str)):
        try:
            instance = json.loads(body)
        except ValueError as exc:
            raise ContractViolation(f"{where}: body is not valid JSON: {exc}") from None
    else:
        instance = body
    schema = media_obj.get("schema")
    if schema:
        _raise_errors(_validator_for(_schema_ref_or_inline(schema)), instance, where)


# --------------------------------------------------------------------------- #
# httpx recorder
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    url: str
    body: bytes
    content_type: str | None


class RequestRecorder:
    """httpx event hook that records outgoing requests for contract checks.

    ``httpx.AsyncClient(event_hooks={"request": [recorder]})``; for a sync
    ``httpx.Client`` use ``recorder.sync_hook``.  OAuth calls are recorded and
    checked as token requests unless ``include_auth=False``.
    """

    def __init__(self, include_auth: bool = True) -> None:
        self.include_auth = include_auth
        self.requests: list[RecordedRequest] = []

    def _store(self, request: Any, body: bytes) -> None:
        url = str(request.url)
        if not self.include_auth and not is_api_request(url):
            return
        self.requests.append(RecordedRequest(request.method, url, body, request.headers.get("content-type")))

    async def __call__(self, request: Any) -> None:
        self._store(request, await request.aread())

    def sync_hook(self, request: Any) -> None:
        self._store(request, request.read())

    def clear(self) -> None:
        self.requests.clear()

    def assert_all_valid(self) -> None:
        problems = []
        for r in self.requests:
            try:
                validate_request(r.method, r.url, r.body or None, r.content_type)
            except ContractViolation as exc:
                problems.append(f"{r.method} {r.url}\n  {exc}")
        if problems:
            raise ContractViolation(
                f"{len(problems)} of {len(self.requests)} recorded request(s) violate the API contract:\n" + "\n".join(problems)
            )
