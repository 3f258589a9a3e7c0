"""The MQTT bus: topic names (:mod:`.topics`), the message contract (:mod:`.messages`), the connection with its
subscriptions and typed RPC (:mod:`.client`) and who is online (:mod:`.presence`)."""

from edge.bus.client import DEADLINE, BrokerAddress, Bus, Message, Subscription
from edge.bus.presence import Presence
from edge.bus.topics import OFFLINE, ONLINE, Component, EventKind, RpcMethod, Topics, rpc_route

__all__ = [
    "DEADLINE",
    "OFFLINE",
    "ONLINE",
    "BrokerAddress",
    "Bus",
    "Component",
    "EventKind",
    "Message",
    "Presence",
    "RpcMethod",
    "Subscription",
    "Topics",
    "rpc_route",
]
