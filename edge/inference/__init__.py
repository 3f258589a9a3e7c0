"""The inference daemon: the only process that loads models. It answers RPCs on the bus."""
