"""The reconciler: a scheduled safety net that hands paid-but-unordered carts and unannounced Orders to
order-finalization, and reports refunds without a return (see :mod:`.run`)."""
