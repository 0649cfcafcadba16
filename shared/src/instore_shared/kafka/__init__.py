"""Kafka helpers. Importing this package routes every aiokafka connection attempt of the process
through an exponential, capped backoff (:mod:`instore_shared.kafka.reconnect` says why): every
process that talks to Kafka imports it, so none can start a reconnect storm."""

from instore_shared.kafka import reconnect

reconnect.install()
