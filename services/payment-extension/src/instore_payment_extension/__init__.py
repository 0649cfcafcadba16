"""InStore payment extensions: requests from Kafka → a provider adapter → InStores callback, Composable Commerce, an event."""
