"""The provider adapter port: what the payment-extension service asks of a payment provider.

One adapter per provider (:mod:`.simulator` for development and tests, :mod:`.stripe` as a
reference for a real API). Every call carries an idempotency key derived from InStore's ids
(:func:`instore_shared.contract.payment_extensions.idempotency_key`): the same key must give
the same outcome and move money at most once, which is what makes a redelivered request safe.

Results are typed: :class:`Approved`, :class:`Declined` (a refusal: final, not retried), and for
``pay`` also :class:`NeedsPrompt` (the provider wants the colleague to choose before it goes on;
continue with :meth:`PaymentProvider.resume`). :class:`ProviderDown` is raised when the provider
could not be reached or answered 5xx/429: transient, retried within the request's budget.
Money is integer minor units plus an ISO 4217 code (:class:`Money`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from instore_shared.contract.payment_extensions import CardDetails, Money, PromptOption, Tender


class ProviderDown(Exception):
    """The provider could not be reached, timed out, or answered 5xx/429: try again (same idempotency key)."""


@dataclass(frozen=True)
class Approved:
    """The provider did it. ``reference``: its id of the payment/refund (the Transaction's ``interactionId``)."""

    reference: str
    approval_code: str | None = None
    card: CardDetails | None = None
    balance: Money | None = None


@dataclass(frozen=True)
class Declined:
    """The provider refused: ``reason`` is a machine-readable code (e.g. ``insufficient_funds``), ``message`` for people."""

    reason: str
    message: str = ""
    reference: str | None = None


@dataclass(frozen=True)
class NeedsPrompt:
    """The provider waits for the colleague (e.g. "signature OK?"): show ``message`` with ``options``, then
    :meth:`PaymentProvider.resume` with the chosen option's ``response``. ``keep_alive_ms``: how long to wait."""

    reference: str
    message: str
    options: list[PromptOption] = field(default_factory=list)
    title: str | None = None
    keep_alive_ms: int = 60_000


@dataclass(frozen=True)
class PaymentInput:
    """What ``pay`` needs: ``amount`` (minor units + ISO 4217), ``capture`` (False: authorize only), the card or wallet
    token InStore passed (never a card number), and ids for the provider's metadata."""

    tender: Tender
    amount: Money
    capture: bool
    card_token: str | None
    request_id: str
    payment_id: str | None


class PaymentProvider(Protocol):
    """A payment provider behind InStore's Custom payment processor."""

    name: str
    """Short name, written as ``paymentMethodInfo.paymentInterface`` and in events (e.g. ``simulator``, ``stripe``)."""

    async def pay(self, payment: PaymentInput, idempotency_key: str) -> Approved | Declined | NeedsPrompt:
        """Charge (or authorize when ``payment.capture`` is False). Raises :class:`ProviderDown`."""
        ...

    async def resume(self, reference: str, response: str, idempotency_key: str) -> Approved | Declined | NeedsPrompt:
        """Go on with a payment that asked a prompt, with the colleague's ``response``. Raises :class:`ProviderDown`."""
        ...

    async def capture(self, reference: str, amount: Money, idempotency_key: str) -> Approved | Declined:
        """Capture ``amount`` of the authorization ``reference``. Raises :class:`ProviderDown`."""
        ...

    async def cancel(self, reference: str, idempotency_key: str) -> Approved | Declined:
        """Void the authorization or unfinished payment ``reference``. Raises :class:`ProviderDown`."""
        ...

    async def refund(self, reference: str, amount: Money, idempotency_key: str) -> Approved | Declined:
        """Give back ``amount`` of the charge ``reference``. Raises :class:`ProviderDown`."""
        ...

    async def balance(self, card_token: str | None, currency: str, idempotency_key: str) -> Approved | Declined:
        """A gift card's balance (``Approved.balance``). Raises :class:`ProviderDown`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
