"""Door outputs: what a granted walk-up drives besides the MQTT door command — a relay on a GPIO line, and a card read
at an access-control panel (the appliance as an OSDP reader)."""
