#!/usr/bin/env python3
"""Alice: a secure channel to Bob's listener through the hub; echoes each stdin line.
alice.py API LISTENER_ROUTE   e.g. /tcp/127.0.0.1:4000/service/forward_to_bob/service/listener"""
import sys
import veil_sdk

alice = veil_sdk.connect(sys.argv[1])
channel = alice.open_channel(sys.argv[2])
print("[✓] End-to-end encrypted secure channel was established with", channel.remote_identifier, flush=True)
try:
    for line in sys.stdin:
        reply = alice.request(channel.route + "/service/echoer", line.rstrip("\n"))
        print("Alice received an echo:", reply.text, flush=True)
except KeyboardInterrupt:
    pass
finally:
    alice.close_channel(channel.address)  # done: the channel ends on both sidecars
