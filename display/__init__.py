"""The challenge display on the monitor beside the camera: a pure model of what to show at time t (``state``) and a
pygame-ce renderer (``render``)."""
