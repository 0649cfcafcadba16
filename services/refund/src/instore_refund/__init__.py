"""refund: a finalized delegated refund → return info and Refund transactions on the original
Orders and Payments, exactly once, and one ``commerce.refunds.completed.v1`` event per Order."""
