"""The hub: HTTP API, web challenge page and OpenAPI docs. It owns no models; inference runs behind the bus."""
