"""Self-test of the commercetools OpenAPI contract helper.

Official examples must pass, deliberately broken requests must fail.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openapi_contract as oc
from openapi_contract import ContractViolation, validate_request

BASE = "http://127.0.0.1:8989/instore-demo"
EXAMPLES = oc.SPEC_PATH.parent / "examples"
UUID = "27b39077-aa57-48a5-b504-914f68fa44dc"

# resource prefix of examples/actions/<Prefix>...Action.json -> update endpoint
UPDATE_ENDPOINT = {"Cart": "carts", "Order": "orders", "Payment": "payments"}


def _example(name: str) -> dict:
    path = EXAMPLES / name
    assert path.is_file(), f"official example missing: {path}"
    return json.loads(path.read_text())


def _action_files() -> list[Path]:
    files = sorted((EXAMPLES / "actions").glob("*.json"))
    assert files, f"no action examples in {EXAMPLES / 'actions'}"
    return files


def test_spec_loads_fast_and_is_openapi3() -> None:
    started = time.perf_counter()
    spec = oc.load_spec()
    elapsed = time.perf_counter() - started
    assert spec["openapi"].startswith("3.0")
    assert "/{projectKey}/carts/key={key}" in spec["paths"]
    print(f"spec load {elapsed:.2f}s via {oc.LAST_LOAD}")
    # C loader ~3.4 s cold, JSON cache ~0.1 s; generous bound for slow CI
    assert elapsed < 30


def test_missing_spec_raises_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "openapi.yaml"
    monkeypatch.setattr(oc, "SPEC_PATH", missing)
    oc.load_spec.cache_clear()
    try:
        with pytest.raises(oc.SpecNotFound, match=str(missing)):
            oc.load_spec()
    finally:
        oc.load_spec.cache_clear()


# ----------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("example", "method", "path"),
    [
        ("cart-create.example.json", "POST", "/carts"),
        # {"cart": {...}, "version": 10} is an OrderFromCartDraft -> POST /orders
        # (OrderImportDraft belongs to POST /orders/import).
        ("order-create.example.json", "POST", "/orders"),
        ("payment-create.example.json", "POST", "/payments"),
        ("cart-update.example.json", "POST", f"/carts/{UUID}"),
        ("order-update.example.json", "POST", f"/orders/{UUID}"),
        ("payment-update.example.json", "POST", f"/payments/{UUID}"),
        ("cart-update.example.json", "POST", "/carts/key=demo-sale-cart"),
        ("order-update.example.json", "POST", "/orders/order-number=X-1"),
        ("payment-update.example.json", "POST", "/payments/key=pay-1"),
    ],
)
def test_official_request_examples_validate(example: str, method: str, path: str) -> None:
    body = _example(example)
    validate_request(method, BASE + path, json.dumps(body).encode(), "application/json")
    validate_request(method, BASE + path, body)  # dict bodies work too


def test_order_create_example_is_order_from_cart_draft() -> None:
    spec = oc.load_spec()
    schema = spec["paths"]["/{projectKey}/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/OrderFromCartDraft"}
    oc.validate_schema(_example("order-create.example.json"), "OrderFromCartDraft")
    with pytest.raises(ContractViolation):  # it is not an OrderImportDraft
        oc.validate_schema(_example("order-create.example.json"), "OrderImportDraft")


@pytest.mark.parametrize("action_file", _action_files(), ids=lambda p: p.stem)
def test_official_action_examples_validate(action_file: Path) -> None:
    prefix = next(p for p in UPDATE_ENDPOINT if action_file.name.startswith(p))
    action = json.loads(action_file.read_text())
    body = {"version": 1, "actions": [action]}
    validate_request("POST", f"{BASE}/{UPDATE_ENDPOINT[prefix]}/{UUID}?expand=paymentInfo.payments%5B*%5D", body)
    # the action is validated against its own subtype: wrong resource -> unknown action
    # or wrong shape (addPayment exists on both Cart and Order, so skip those)
    other = {"Cart": "payments", "Order": "payments", "Payment": "carts"}[prefix]
    if action["action"] not in {"addPayment"}:
        with pytest.raises(ContractViolation):
            validate_request("POST", f"{BASE}/{other}/{UUID}", body)


# ----------------------------------------------------------------- mutations


def test_money_cent_amount_as_float_string_fails() -> None:
    body = copy.deepcopy(_example("payment-create.example.json"))
    body["amountPlanned"]["centAmount"] = "12.34"
    with pytest.raises(ContractViolation, match=r"\$\.amountPlanned\.centAmount.*not of type 'integer'"):
        validate_request("POST", f"{BASE}/payments", body)


def test_money_in_nested_action_fails() -> None:
    action = json.loads((EXAMPLES / "actions" / "PaymentAddTransactionAction.json").read_text())
    action["transaction"]["amount"]["centAmount"] = "12.34"
    with pytest.raises(ContractViolation, match=r"\$\.actions\[0\]\.transaction\.amount\.centAmount"):
        validate_request("POST", f"{BASE}/payments/{UUID}", {"version": 1, "actions": [action]})


def test_unknown_update_action_fails() -> None:
    body = {"version": 1, "actions": [{"action": "addPaymentz", "payment": {"typeId": "payment", "id": UUID}}]}
    with pytest.raises(ContractViolation, match=r"\$\.actions\[0\]\.action: 'addPaymentz' is not one of"):
        validate_request("POST", f"{BASE}/carts/{UUID}", body)


def test_action_missing_field_fails_against_subtype() -> None:
    body = {"version": 1, "actions": [{"action": "addPayment"}]}  # CartAddPaymentAction requires payment
    with pytest.raises(ContractViolation, match=r"'payment' is a required property"):
        validate_request("POST", f"{BASE}/carts/{UUID}", body)
    body = {"version": 1, "actions": [{"action": "freezeCart", "strategy": "Frozen"}]}
    with pytest.raises(ContractViolation, match=r"strategy"):
        validate_request("POST", f"{BASE}/carts/{UUID}", body)


def test_update_without_version_fails() -> None:
    body = _example("cart-update.example.json")
    del body["version"]
    with pytest.raises(ContractViolation, match="'version' is a required property"):
        validate_request("POST", f"{BASE}/carts/{UUID}", body)


def test_order_from_cart_draft_without_cart_fails() -> None:
    # The spec only requires "version" (cart and deprecated id are both
    # optional there); the one-of-cart-or-id rule is a documented SUPPLEMENT.
    spec_schema = oc.load_spec()["components"]["schemas"]["OrderFromCartDraft"]
    assert spec_schema["required"] == ["version"]
    body = _example("order-create.example.json")
    del body["cart"]
    with pytest.raises(ContractViolation, match=r"\$: 'cart' is a required property"):
        validate_request("POST", f"{BASE}/orders", body)
    validate_request("POST", f"{BASE}/orders", {**body, "id": UUID})  # deprecated form


def test_payment_state_not_in_enum_fails() -> None:
    body = _example("order-create.example.json")
    body["paymentState"] = "Settled"
    with pytest.raises(ContractViolation, match=r"\$\.paymentState: 'Settled' is not one of"):
        validate_request("POST", f"{BASE}/orders", body)
    body["paymentState"] = "Paid"
    validate_request("POST", f"{BASE}/orders", body)


def test_order_change_payment_state_action_enum() -> None:
    body = {"version": 1, "actions": [{"action": "changePaymentState", "paymentState": "Settled"}]}
    with pytest.raises(ContractViolation, match="Settled"):
        validate_request("POST", f"{BASE}/orders/{UUID}", body)


def test_invalid_json_body_fails() -> None:
    with pytest.raises(ContractViolation, match="not valid JSON"):
        validate_request("POST", f"{BASE}/carts", b"{nope", "application/json")


# ----------------------------------------------------------------- paths & query


@pytest.mark.parametrize(
    ("url", "template"),
    [
        (f"{BASE}/carts/key=abc", "/{projectKey}/carts/key={key}"),
        (f"{BASE}/carts/key%3Dabc", "/{projectKey}/carts/key={key}"),
        (f"{BASE}/carts/{UUID}?expand=paymentInfo.payments[*]", "/{projectKey}/carts/{ID}"),
        (
            f"{BASE}/carts/{UUID}?expand=paymentInfo.payments%5B*%5D&expand=lineItems[*].state[*].state",
            "/{projectKey}/carts/{ID}",
        ),
        (f"{BASE}/orders/order-number=X", "/{projectKey}/orders/order-number={orderNumber}"),
        (f"{BASE}/carts?where=key%3D%22x%22&limit=20&withTotal=false&var.k=v", "/{projectKey}/carts"),
        (f"{BASE}/carts/replicate", "/{projectKey}/carts/replicate"),
    ],
)
def test_get_paths_pass(url: str, template: str) -> None:
    assert oc.match_path(oc.urlsplit(url).path) == template
    if "replicate" not in url:
        validate_request("GET", url, None)


def test_unknown_path_fails() -> None:
    with pytest.raises(ContractViolation, match=r"no path .* matches '/instore-demo/cartz/1'"):
        validate_request("GET", f"{BASE}/cartz/1", None)


def test_undeclared_query_param_fails() -> None:
    with pytest.raises(ContractViolation, match="query parameter 'expnad' is not declared"):
        validate_request("GET", f"{BASE}/carts/{UUID}?expnad=paymentInfo", None)
    with pytest.raises(ContractViolation, match="query parameter 'where' is not declared"):
        validate_request("GET", f"{BASE}/carts/{UUID}?where=x", None)  # only on the collection


def test_bad_query_value_type_fails() -> None:
    with pytest.raises(ContractViolation, match="limit"):
        validate_request("GET", f"{BASE}/carts?limit=lots", None)


def test_undeclared_method_fails() -> None:
    with pytest.raises(ContractViolation, match="PUT is not declared"):
        validate_request("PUT", f"{BASE}/carts/{UUID}", {"version": 1, "actions": []})


def test_delete_with_version_query_passes() -> None:
    validate_request("DELETE", f"{BASE}/carts/{UUID}?version=3", None)


# ----------------------------------------------------------------- oauth


def test_oauth_token_request() -> None:
    url = "http://127.0.0.1:8989/oauth/token"
    assert not oc.is_api_request(url)
    assert oc.is_api_request(f"{BASE}/carts")
    form = b"grant_type=client_credentials&scope=manage_project%3Ainstore-demo"
    validate_request("POST", url, form, "application/x-www-form-urlencoded")
    with pytest.raises(ContractViolation, match="grant_type"):
        validate_request("POST", url, b"grant_type=password", "application/x-www-form-urlencoded")


# ----------------------------------------------------------------- recorder


def test_request_recorder_with_httpx() -> None:
    httpx = pytest.importorskip("httpx")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    async def run(recorder: oc.RequestRecorder, bad: bool) -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), event_hooks={"request": [recorder]}) as client:
            await client.post(
                "http://127.0.0.1:8989/oauth/token",
                data={"grant_type": "client_credentials"},
            )
            await client.get(f"{BASE}/carts/key=demo-sale-cart", params={"expand": "paymentInfo.payments[*]"})
            action = {"action": "addPaymentz" if bad else "addPayment", "payment": {"typeId": "payment", "id": UUID}}
            await client.post(f"{BASE}/carts/{UUID}", json={"version": 1, "actions": [action]})

    good = oc.RequestRecorder()
    asyncio.run(run(good, bad=False))
    assert [r.method for r in good.requests] == ["POST", "GET", "POST"]
    assert good.requests[2].content_type == "application/json"
    good.assert_all_valid()

    bad = oc.RequestRecorder()
    asyncio.run(run(bad, bad=True))
    with pytest.raises(ContractViolation, match=r"(?s)1 of 3 recorded .*addPaymentz'? is not one of"):
        bad.assert_all_valid()
