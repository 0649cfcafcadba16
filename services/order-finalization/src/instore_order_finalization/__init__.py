"""order-finalization: payment webhooks in, exactly one Order per Cart out (work in progress: the
decision core; the Kafka subscriber, dead-letter topic and replay command come next)."""
