#!/usr/bin/env python3
"""Bob: a secure channel listener, a relay on the hub, and an echoer. bob.py API [HUB_ROUTE]"""
import sys
import veil_sdk

bob = veil_sdk.connect(sys.argv[1] if len(sys.argv) > 1 else None)
bob.ensure_listener("listener")  # anyone may open a channel; each message says who sent it
print("[✓] Secure channel listener at /service/listener as", bob.identity().public_identity.identifier)
if len(sys.argv) > 2:
    relay = bob.ensure_relay(sys.argv[2])  # the hub picks the name, as in the seed; kept on rerun
    print("[✓] Relay was created on the hub.\nForwarding address for Bob is:", relay.address, flush=True)
try:
    for message in bob.serve("echoer"):
        print(f"[✓] Address: echoer, Received: {message.text} (from {message.sender.identifier})", flush=True)
        message.reply(message.payload)
except KeyboardInterrupt:
    pass
