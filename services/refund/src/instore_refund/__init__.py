"""refund: a finalized delegated refund → return info and Refund transactions on the original
Orders and Payments, exactly once (work in progress: the planning core; the subscriber comes next)."""
