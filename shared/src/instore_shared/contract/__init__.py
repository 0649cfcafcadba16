"""Wire schemas between our own services (msgspec Structs, JSON on Kafka)."""
