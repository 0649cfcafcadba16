"""Async Composable Commerce (commercetools) client and its typed errors."""

from instore_shared.commercetools.client import CommercetoolsClient
from instore_shared.commercetools.errors import (
    AuthenticationFailed,
    CommercetoolsError,
    ConcurrentModification,
    DuplicateField,
    InvalidInput,
    NotFound,
    TransientError,
)

__all__ = [
    "AuthenticationFailed",
    "CommercetoolsClient",
    "CommercetoolsError",
    "ConcurrentModification",
    "DuplicateField",
    "InvalidInput",
    "NotFound",
    "TransientError",
]
