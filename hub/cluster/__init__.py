"""The hub as a cluster on Kafka: gateways, scorers and output workers (docs/cluster.md)."""
