"""When a sale is paid, and what its Order is called — pure functions.

Rules (../shared/reference/architecture.md principles 2–3; instore-contract.md §4):
- the successful ``Charge`` transactions of the cart's Payments, in the cart's currency, net of
  successful ``Refund``/``Chargeback`` ones, must cover ``totalPrice`` (split tender: several
  Payments add up);
- the ``orderNumber`` is the cart's order-number Custom Field when InStore set one, else
  derived from the cart id — never from time or randomness, so a retry cannot make a
  second Order.
"""

from __future__ import annotations

from dataclasses import dataclass

from instore_order_finalization.model import Cart, Payment

ORDER_NUMBER_PREFIX = "instore-"


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of the cart's total the successful charges cover, in minor units of ``currency``."""

    currency: str
    total: int
    charged: int

    @property
    def covered(self) -> bool:
        """True when the successful charges reach the total."""
        return self.charged >= self.total


class MissingPayments(Exception):
    """The cart was not read with its Payments expanded (a bug in the caller, not in the data)."""


def payments(cart: Cart) -> list[Payment]:
    """The cart's expanded Payments. Raises :class:`MissingPayments` when a reference is not expanded."""
    refs = cart.paymentInfo.payments if cart.paymentInfo else []
    if any(ref.obj is None for ref in refs):
        raise MissingPayments(f"cart {cart.id}: payments not expanded")
    return [ref.obj for ref in refs if ref.obj is not None]


GIVEN_BACK = frozenset({"Refund", "Chargeback"})
"""Transaction types that return charged money to the shopper (https://docs.commercetools.com/api/projects/payments#transactiontype)."""


def coverage(cart: Cart) -> Coverage:
    """What the cart's successful ``Charge`` transactions keep, net of successful ``Refund`` and ``Chargeback``
    transactions, in the cart's currency, against its ``totalPrice``.

    A sale charged and then refunded in full (voided at the till before it was ordered) is not paid:
    it must never become a ``Paid`` Order. Transactions in another currency do not count (InStore
    environments have one currency).
    """
    currency = cart.totalPrice.currencyCode
    kept = 0
    for p in payments(cart):
        for t in p.transactions:
            if t.state != "Success" or t.amount.currencyCode != currency:
                continue
            if t.type == "Charge":
                kept += t.amount.centAmount
            elif t.type in GIVEN_BACK:
                kept -= t.amount.centAmount
    return Coverage(currency=currency, total=cart.totalPrice.centAmount, charged=kept)


def order_number(cart: Cart, order_number_field: str) -> str:
    """The Order's number: the cart's ``order_number_field`` Custom Field if set, else ``instore-<cart id>``."""
    value = cart.custom.fields.get(order_number_field) if cart.custom else None
    if isinstance(value, str) and value.strip():
        return value.strip()
    return ORDER_NUMBER_PREFIX + cart.id
