"""The fleet: the bridge from a device's broker to the central one, the commands a device answers, and the tool a
fleet manager runs against the central broker."""
